//! Per-connection xDS state: what the proxy watches, what was sent and acknowledged, and
//! istiod's rules for deciding whether a request needs a response.
//!
//! Pure state and decisions, no I/O, so every ACK/NACK rule is unit-tested here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

/// One type URL a proxy subscribed to (istiod's `WatchedResource`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchedResource {
    pub type_url: String,
    /// Resource names the proxy asked for (empty for wildcard types).
    pub resource_names: BTreeSet<String>,
    /// Nonce and version_info of the last response sent.
    pub nonce_sent: String,
    pub version_sent: String,
    /// Nonce and version_info the proxy last acknowledged.
    pub nonce_acked: String,
    pub version_acked: String,
    /// error_detail of an outstanding NACK; cleared by the next ACK.
    pub last_error: String,
    pub last_sent: Option<SystemTime>,
    pub last_acked: Option<SystemTime>,
}

/// The parts of a DiscoveryRequest the rules look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    pub type_url: String,
    pub response_nonce: String,
    pub version_info: String,
    pub resource_names: Vec<String>,
    /// error_detail.message when the request is a NACK.
    pub error_detail: Option<String>,
    /// CDS and LDS: the proxy gets everything whatever it names.
    pub wildcard: bool,
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send the type's resources (initial request, reconnect, or newly named resources).
    Respond,
    /// An ACK: recorded, nothing to send.
    Ack,
    /// A NACK of the current nonce: recorded (lastError), nothing sent; the proxy keeps its
    /// last good config.
    Nack,
    /// A request carrying a nonce we did not send last: ignored entirely.
    StaleNonce,
    /// The proxy stopped watching a non-wildcard type.
    Unsubscribe,
}

/// All watched types of one connection.
#[derive(Debug, Default, Clone)]
pub struct WatchedResources {
    pub by_type: BTreeMap<String, WatchedResource>,
}

impl WatchedResources {
    /// Applies istiod's `shouldRespond` rules to one request and updates the state.
    pub fn on_request(&mut self, req: &RequestInfo, now: SystemTime) -> Decision {
        // A NACK is recorded only against the nonce we sent last; a NACK of an older push says
        // nothing about the config the proxy now runs.
        if let Some(detail) = &req.error_detail {
            return match self.by_type.get_mut(&req.type_url) {
                Some(w) if w.nonce_sent == req.response_nonce => {
                    w.last_error = detail.clone();
                    Decision::Nack
                }
                _ => Decision::StaleNonce,
            };
        }
        if !req.wildcard && req.resource_names.is_empty() && !req.response_nonce.is_empty() {
            self.by_type.remove(&req.type_url);
            return Decision::Unsubscribe;
        }
        let names: BTreeSet<String> = req.resource_names.iter().cloned().collect();
        let Some(w) = self.by_type.get_mut(&req.type_url) else {
            // First request for this type on this connection (also a reconnect that carries a
            // nonce from another server): respond with everything.
            self.by_type.insert(
                req.type_url.clone(),
                WatchedResource {
                    type_url: req.type_url.clone(),
                    resource_names: names,
                    ..Default::default()
                },
            );
            return Decision::Respond;
        };
        if req.response_nonce.is_empty() {
            // Envoy re-requested from scratch (e.g. after a cluster warming reset).
            w.resource_names = names;
            return Decision::Respond;
        }
        if req.response_nonce != w.nonce_sent {
            return Decision::StaleNonce;
        }
        w.nonce_acked = req.response_nonce.clone();
        w.version_acked = req.version_info.clone();
        w.last_error.clear();
        w.last_acked = Some(now);
        let added = names.difference(&w.resource_names).next().is_some();
        let changed = names != w.resource_names;
        w.resource_names = names;
        if (req.wildcard && changed) || (!req.wildcard && added) {
            Decision::Respond
        } else {
            Decision::Ack
        }
    }

    /// Records a response sent for `type_url`.
    pub fn on_sent(&mut self, type_url: &str, nonce: &str, version: &str, now: SystemTime) {
        let w = self
            .by_type
            .entry(type_url.to_string())
            .or_insert_with(|| WatchedResource {
                type_url: type_url.to_string(),
                ..Default::default()
            });
        w.nonce_sent = nonce.to_string();
        w.version_sent = version.to_string();
        w.last_sent = Some(now);
    }

    pub fn get(&self, type_url: &str) -> Option<&WatchedResource> {
        self.by_type.get(type_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";

    fn req(type_url: &str, nonce: &str, names: &[&str], error: Option<&str>) -> RequestInfo {
        RequestInfo {
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            version_info: format!("v-{nonce}"),
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            error_detail: error.map(str::to_string),
            wildcard: type_url == CDS,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn initial_request_responds_then_ack_is_recorded() {
        let mut w = WatchedResources::default();
        assert_eq!(
            w.on_request(&req(CDS, "", &[], None), now()),
            Decision::Respond
        );
        w.on_sent(CDS, "n1", "v1", now());
        assert_eq!(
            w.on_request(&req(CDS, "n1", &[], None), now()),
            Decision::Ack
        );
        let s = w.get(CDS).unwrap();
        assert_eq!(s.nonce_acked, "n1");
        assert_eq!(s.version_acked, "v-n1");
    }

    #[test]
    fn nack_records_error_and_keeps_acked_state() {
        let mut w = WatchedResources::default();
        w.on_request(&req(CDS, "", &[], None), now());
        w.on_sent(CDS, "n1", "v1", now());
        w.on_request(&req(CDS, "n1", &[], None), now());
        w.on_sent(CDS, "n2", "v2", now());
        assert_eq!(
            w.on_request(&req(CDS, "n2", &[], Some("bad cluster")), now()),
            Decision::Nack
        );
        let s = w.get(CDS).unwrap();
        assert_eq!(s.last_error, "bad cluster");
        assert_eq!(s.nonce_acked, "n1", "a NACK does not move the acked nonce");
        // The next good push that is ACKed clears the error.
        w.on_sent(CDS, "n3", "v3", now());
        assert_eq!(
            w.on_request(&req(CDS, "n3", &[], None), now()),
            Decision::Ack
        );
        assert_eq!(w.get(CDS).unwrap().last_error, "");
    }

    #[test]
    fn stale_nonces_are_ignored_for_acks_and_nacks() {
        let mut w = WatchedResources::default();
        w.on_request(&req(CDS, "", &[], None), now());
        w.on_sent(CDS, "n1", "v1", now());
        w.on_sent(CDS, "n2", "v2", now());
        assert_eq!(
            w.on_request(&req(CDS, "n1", &[], None), now()),
            Decision::StaleNonce
        );
        assert_eq!(
            w.on_request(&req(CDS, "n1", &[], Some("old")), now()),
            Decision::StaleNonce
        );
        let s = w.get(CDS).unwrap();
        assert_eq!(s.nonce_acked, "");
        assert_eq!(s.last_error, "");
    }

    #[test]
    fn eds_responds_only_when_names_are_added() {
        let mut w = WatchedResources::default();
        assert_eq!(
            w.on_request(&req(EDS, "", &["a"], None), now()),
            Decision::Respond
        );
        w.on_sent(EDS, "n1", "v1", now());
        assert_eq!(
            w.on_request(&req(EDS, "n1", &["a", "b"], None), now()),
            Decision::Respond
        );
        w.on_sent(EDS, "n2", "v2", now());
        assert_eq!(
            w.on_request(&req(EDS, "n2", &["b"], None), now()),
            Decision::Ack
        );
        assert_eq!(w.get(EDS).unwrap().resource_names.len(), 1);
        assert_eq!(
            w.on_request(&req(EDS, "n2", &[], None), now()),
            Decision::Unsubscribe
        );
        assert!(w.get(EDS).is_none());
    }

    #[test]
    fn reconnect_with_foreign_nonce_responds() {
        let mut w = WatchedResources::default();
        assert_eq!(
            w.on_request(&req(CDS, "nonce-from-other-replica", &[], None), now()),
            Decision::Respond
        );
    }
}
