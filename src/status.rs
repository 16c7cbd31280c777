//! Per-proxy sync status: what each connected proxy was sent, acknowledged or rejected, per
//! type. Written by the xds layer, read by the debug API (`/debug/syncz`) and the CLI.
//!
//! Ground floor like the model: plain data and formatting, no gRPC, no HTTP.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use crate::model::proxy::Proxy;
use crate::proto::{ResourceSyncStatus, SyncStatus};
pub use crate::resource_type::{
    CLUSTER_TYPE, ENDPOINT_TYPE, EXTENSION_CONFIG_TYPE, LISTENER_TYPE, ROUTE_TYPE, ResourceType,
};

/// Versions as they appear on the wire and in syncz: 16 hex digits.
pub fn format_version(version: u64) -> String {
    format!("{version:016x}")
}

/// A response nonce: the content version sent and a per-connection sequence number, written
/// `<version as 16 hex digits>-<seq>` (so a nonce names what it carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Nonce {
    pub version: u64,
    pub seq: u64,
}

impl Nonce {
    /// Parses a nonce we wrote; anything else (another server's, garbage) is `None`.
    pub fn parse(s: &str) -> Option<Nonce> {
        let (version, seq) = s.split_once('-')?;
        if version.len() != 16 {
            return None;
        }
        Some(Nonce {
            version: u64::from_str_radix(version, 16).ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.version, self.seq)
    }
}

/// Sync state of one type on one connection, as numbers (formatted only when read). The
/// version sent is the sent nonce's, the version acknowledged the acknowledged nonce's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TypeSyncState {
    pub nonce_sent: Option<Nonce>,
    pub nonce_acked: Option<Nonce>,
    /// error_detail of an outstanding NACK; cleared by the next ACK.
    pub last_error: Option<Arc<str>>,
    /// The Istio objects behind the rejected config (`Kind namespace/name`), with last_error.
    pub last_error_sources: Arc<[String]>,
    pub last_sent: Option<SystemTime>,
    pub last_acked: Option<SystemTime>,
}

impl TypeSyncState {
    /// Records a response sent.
    pub fn on_sent(&mut self, nonce: Nonce, now: SystemTime) {
        self.nonce_sent = Some(nonce);
        self.last_sent = Some(now);
    }

    /// Records an ACK of `nonce`.
    pub fn on_ack(&mut self, nonce: Nonce, now: SystemTime) {
        self.nonce_acked = Some(nonce);
        self.last_acked = Some(now);
        self.last_error = None;
        self.last_error_sources = Arc::from([]);
    }

    /// Records a NACK (the proxy keeps its last good config).
    pub fn on_nack(&mut self, error: &str) {
        self.last_error = Some(Arc::from(error));
        self.last_error_sources = Arc::from([]);
    }

    /// Records which Istio objects the outstanding NACK is traced to.
    pub fn blame(&mut self, sources: Vec<String>) {
        self.last_error_sources = Arc::from(sources);
    }

    /// Whether `nonce` (as the proxy sent it) is the last one we sent.
    pub fn is_current(&self, nonce: &str) -> Option<Nonce> {
        Nonce::parse(nonce).filter(|n| Some(*n) == self.nonce_sent)
    }

    fn render(&self) -> ResourceSyncStatus {
        let text = |n: Option<Nonce>| n.map(|n| n.to_string()).unwrap_or_default();
        let version = |n: Option<Nonce>| n.map(|n| format_version(n.version)).unwrap_or_default();
        ResourceSyncStatus {
            sent: text(self.nonce_sent),
            acked: text(self.nonce_acked),
            sent_time: rfc3339(self.last_sent),
            sent_version: version(self.nonce_sent),
            acked_version: version(self.nonce_acked),
            last_error: self.last_error.as_deref().unwrap_or_default().to_string(),
            last_error_sources: self.last_error_sources.to_vec(),
            acked_time: self
                .last_acked
                .map(|t| rfc3339(Some(t)))
                .unwrap_or_default(),
        }
    }
}

/// One connected proxy: who it is and, per type it watches, what was sent and acknowledged.
/// Shared between its stream (which writes) and the debug API (which reads).
#[derive(Debug)]
pub struct ConnectionStatus {
    pub proxy: Arc<Proxy>,
    types: Mutex<[Option<TypeSyncState>; ResourceType::COUNT]>,
}

impl ConnectionStatus {
    pub fn new(proxy: Arc<Proxy>) -> ConnectionStatus {
        ConnectionStatus {
            proxy,
            types: Mutex::new(Default::default()),
        }
    }

    /// Replaces the state of `kind` (`None`: no longer watched).
    pub fn set(&self, kind: ResourceType, state: Option<&TypeSyncState>) {
        self.types.lock().expect("status lock")[kind.index()] = state.cloned();
    }

    pub fn get(&self, kind: ResourceType) -> Option<TypeSyncState> {
        self.types.lock().expect("status lock")[kind.index()].clone()
    }

    /// istiod's SyncStatus JSON entry.
    pub fn to_sync_status(&self) -> SyncStatus {
        let types = self.types.lock().expect("status lock").clone();
        let nonces = |kind: ResourceType| {
            types[kind.index()]
                .as_ref()
                .map(|t| {
                    let r = t.render();
                    (r.sent, r.acked)
                })
                .unwrap_or_default()
        };
        let (cluster_sent, cluster_acked) = nonces(ResourceType::Cluster);
        let (listener_sent, listener_acked) = nonces(ResourceType::Listener);
        let (route_sent, route_acked) = nonces(ResourceType::Route);
        let (endpoint_sent, endpoint_acked) = nonces(ResourceType::Endpoint);
        let p = &self.proxy;
        SyncStatus {
            cluster_id: p.cluster_id.clone(),
            proxy: p.name(),
            proxy_type: p.node_type.as_str().to_string(),
            proxy_version: String::new(),
            istio_version: p.istio_version.clone(),
            cluster_sent,
            cluster_acked,
            listener_sent,
            listener_acked,
            route_sent,
            route_acked,
            endpoint_sent,
            endpoint_acked,
            extensionconfig_sent: String::new(),
            extensionconfig_acked: String::new(),
            resources: ResourceType::PUSH_ORDER
                .into_iter()
                .filter_map(|kind| {
                    let t = types[kind.index()].as_ref()?;
                    Some((kind.type_url().to_string(), t.render()))
                })
                .collect(),
            node_id: p.id.clone(),
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
    connections: DashMap<String, Arc<ConnectionStatus>>,
}

impl SyncStatusStore {
    pub fn insert(&self, connection_id: &str, status: Arc<ConnectionStatus>) {
        self.connections.insert(connection_id.to_string(), status);
    }

    pub fn remove(&self, connection_id: &str) {
        self.connections.remove(connection_id);
    }

    /// SyncStatus entries sorted by proxy name (istiod's `/debug/syncz`).
    pub fn syncz(&self, namespace: Option<&str>) -> Vec<SyncStatus> {
        let mut out: Vec<SyncStatus> = self
            .connections
            .iter()
            .filter(|c| namespace.is_none_or(|ns| c.proxy.namespace == ns))
            .map(|c| c.to_sync_status())
            .collect();
        out.sort_by(|a, b| a.proxy.cmp(&b.proxy).then(a.node_id.cmp(&b.node_id)));
        out
    }

    /// Per connection: id and the types it watches.
    pub fn watched_types(&self, connection_id: &str) -> Vec<ResourceType> {
        self.connections
            .get(connection_id)
            .map(|c| {
                ResourceType::PUSH_ORDER
                    .into_iter()
                    .filter(|k| c.get(*k).is_some())
                    .collect()
            })
            .unwrap_or_default()
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
    // `secs` in whole `big` units, with the rest in `small` units unless it is zero.
    let two_units = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        let rest = (secs % big) / small;
        if rest == 0 {
            format!("{}{big_unit}", secs / big)
        } else {
            format!("{}{big_unit}{rest}{small_unit}", secs / big)
        }
    };
    if secs < 2 * m {
        format!("{secs}s")
    } else if secs < 10 * m {
        two_units(m, "m", 1, "s")
    } else if secs < 3 * h {
        format!("{}m", secs / m)
    } else if secs < 8 * h {
        two_units(h, "h", m, "m")
    } else if secs < 48 * h {
        format!("{}h", secs / h)
    } else if secs < 8 * day {
        two_units(day, "d", h, "h")
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
        assert_eq!(human_duration(Duration::from_secs(5 * 3600)), "5h");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 5 * 3600)),
            "3d5h"
        );
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
        let meta = serde_json::json!({"NAMESPACE": "testns1", "CLUSTER_ID": "Kubernetes"});
        let proxy = Proxy::from_node(
            "sidecar~10.0.0.1~sleep.testns1~testns1.svc.cluster.local",
            meta.as_object().unwrap(),
        )
        .unwrap();
        let status = Arc::new(ConnectionStatus::new(Arc::new(proxy)));
        let mut cds = TypeSyncState::default();
        cds.on_sent(Nonce { version: 1, seq: 1 }, SystemTime::UNIX_EPOCH);
        cds.on_ack(Nonce { version: 1, seq: 1 }, SystemTime::UNIX_EPOCH);
        cds.on_sent(Nonce { version: 2, seq: 2 }, SystemTime::UNIX_EPOCH);
        status.set(ResourceType::Cluster, Some(&cds));
        store.insert("c1", status);
        let json = serde_json::to_value(store.syncz(None)).unwrap();
        assert_eq!(json[0]["proxy"], "sleep.testns1");
        assert_eq!(json[0]["cluster_sent"], "0000000000000002-2");
        assert_eq!(json[0]["cluster_acked"], "0000000000000001-1");
        assert!(
            json[0].get("listener_sent").is_none(),
            "empty fields are omitted as in istiod"
        );
        let cds_json = &json[0]["resources"][CLUSTER_TYPE];
        assert_eq!(cds_json["sent"], "0000000000000002-2");
        assert_eq!(cds_json["sentVersion"], "0000000000000002");
        assert_eq!(cds_json["ackedVersion"], "0000000000000001");
        assert_eq!(cds_json["sentTime"], "1970-01-01T00:00:00.000Z");
        assert!(store.syncz(Some("other")).is_empty());
    }

    #[test]
    fn nonces_round_trip_and_foreign_ones_are_not_ours() {
        let n = Nonce {
            version: 0xabc,
            seq: 42,
        };
        assert_eq!(n.to_string(), "0000000000000abc-42");
        assert_eq!(Nonce::parse(&n.to_string()), Some(n));
        for garbage in [
            "",
            "x",
            "abc-1",
            "0000000000000abc-",
            "zzzzzzzzzzzzzzzz-1",
            "a3f1c1e2-9b0d-4c4e",
        ] {
            assert_eq!(Nonce::parse(garbage), None, "{garbage}");
        }
    }
}
