//! Per-connection SotW xDS state: what the proxy watches, what was sent and acknowledged, and
//! istiod's rules for deciding whether a request needs a response.
//!
//! Pure state and decisions, no I/O, so every ACK/NACK rule is unit-tested here. Small on
//! purpose (thousands of connections keep one each): indexed by type, nonces and versions as
//! numbers, requested names as a set of hashes shared with the encoding that holds them.

use std::sync::Arc;
use std::time::SystemTime;

use crate::resource_type::ResourceType;
use crate::status::TypeSyncState;
use crate::xds::cache::{EncodedSet, NameSet};

/// One type a proxy subscribed to (istiod's `WatchedResource`).
#[derive(Debug, Clone, Default)]
pub struct WatchedResource {
    /// Resource names the proxy asked for (`None` for wildcard types: everything).
    pub names: Option<NameSet>,
    /// What was sent and acknowledged (the status store gets a copy).
    pub sync: TypeSyncState,
    /// The set the last response came from (a later response may carry only what changed
    /// since).
    pub last_set: Option<Arc<EncodedSet>>,
    /// When the last response carried only what changed: the set it changed from.
    pub partial_base: Option<Arc<EncodedSet>>,
}

impl PartialEq for WatchedResource {
    fn eq(&self, other: &Self) -> bool {
        self.names == other.names && self.sync == other.sync
    }
}

impl Eq for WatchedResource {}

/// The parts of a DiscoveryRequest the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub kind: ResourceType,
    pub response_nonce: &'a str,
    pub resource_names: &'a [String],
    /// error_detail.message when the request is a NACK.
    pub error_detail: Option<&'a str>,
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
    by_type: [Option<WatchedResource>; ResourceType::COUNT],
}

impl WatchedResources {
    /// Applies istiod's `shouldRespond` rules to one request and updates the state.
    pub fn on_request(&mut self, req: &RequestInfo<'_>, now: SystemTime) -> Decision {
        let slot = &mut self.by_type[req.kind.index()];
        // A NACK is recorded only against the nonce we sent last; a NACK of an older push says
        // nothing about the config the proxy now runs.
        if let Some(detail) = req.error_detail {
            return match slot {
                Some(w) if w.sync.is_current(req.response_nonce).is_some() => {
                    w.sync.on_nack(detail);
                    Decision::Nack
                }
                _ => Decision::StaleNonce,
            };
        }
        let wildcard = req.kind.is_wildcard();
        if !wildcard && req.resource_names.is_empty() && !req.response_nonce.is_empty() {
            *slot = None;
            return Decision::Unsubscribe;
        }
        let names = (!wildcard).then(|| NameSet::from_names(req.resource_names));
        let Some(w) = slot else {
            // First request for this type on this connection (also a reconnect that carries a
            // nonce from another server): respond with everything.
            *slot = Some(WatchedResource {
                names,
                ..Default::default()
            });
            return Decision::Respond;
        };
        if req.response_nonce.is_empty() {
            // Envoy re-requested from scratch (e.g. after a cluster warming reset).
            w.names = names;
            return Decision::Respond;
        }
        let Some(nonce) = w.sync.is_current(req.response_nonce) else {
            return Decision::StaleNonce;
        };
        w.sync.on_ack(nonce, now);
        let added = match (&w.names, &names) {
            (Some(old), Some(new)) => old.lacks_any_of(new),
            _ => false,
        };
        // An ACK usually names what was asked before: keep the (shared) set already held.
        if w.names != names {
            w.names = names;
        }
        if added {
            Decision::Respond
        } else {
            Decision::Ack
        }
    }

    pub fn get(&self, kind: ResourceType) -> Option<&WatchedResource> {
        self.by_type[kind.index()].as_ref()
    }

    pub fn get_mut(&mut self, kind: ResourceType) -> Option<&mut WatchedResource> {
        self.by_type[kind.index()].as_mut()
    }

    /// Watched types, in push order.
    pub fn kinds(&self) -> impl Iterator<Item = ResourceType> + '_ {
        ResourceType::PUSH_ORDER
            .into_iter()
            .filter(|k| self.by_type[k.index()].is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Nonce;

    const CDS: ResourceType = ResourceType::Cluster;
    const EDS: ResourceType = ResourceType::Endpoint;

    fn n(seq: u64) -> Nonce {
        Nonce { version: seq, seq }
    }

    fn req<'a>(
        kind: ResourceType,
        nonce: &'a str,
        names: &'a [String],
        error: Option<&'a str>,
    ) -> RequestInfo<'a> {
        RequestInfo {
            kind,
            response_nonce: nonce,
            resource_names: names,
            error_detail: error,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    fn sent(w: &mut WatchedResources, kind: ResourceType, nonce: Nonce) -> String {
        w.get_mut(kind).unwrap().sync.on_sent(nonce, now());
        nonce.to_string()
    }

    #[test]
    fn initial_request_responds_then_ack_is_recorded() {
        let mut w = WatchedResources::default();
        assert_eq!(
            w.on_request(&req(CDS, "", &[], None), now()),
            Decision::Respond
        );
        let n1 = sent(&mut w, CDS, n(1));
        assert_eq!(
            w.on_request(&req(CDS, &n1, &[], None), now()),
            Decision::Ack
        );
        assert_eq!(w.get(CDS).unwrap().sync.nonce_acked, Some(n(1)));
    }

    #[test]
    fn nack_records_error_and_keeps_acked_state() {
        let mut w = WatchedResources::default();
        w.on_request(&req(CDS, "", &[], None), now());
        let n1 = sent(&mut w, CDS, n(1));
        w.on_request(&req(CDS, &n1, &[], None), now());
        let n2 = sent(&mut w, CDS, n(2));
        assert_eq!(
            w.on_request(&req(CDS, &n2, &[], Some("bad cluster")), now()),
            Decision::Nack
        );
        let s = &w.get(CDS).unwrap().sync;
        assert_eq!(s.last_error.as_deref(), Some("bad cluster"));
        assert_eq!(
            s.nonce_acked,
            Some(n(1)),
            "a NACK does not move the acked nonce"
        );
        // The next good push that is ACKed clears the error.
        let n3 = sent(&mut w, CDS, n(3));
        assert_eq!(
            w.on_request(&req(CDS, &n3, &[], None), now()),
            Decision::Ack
        );
        assert_eq!(w.get(CDS).unwrap().sync.last_error, None);
    }

    #[test]
    fn stale_and_garbage_nonces_are_ignored_for_acks_and_nacks() {
        let mut w = WatchedResources::default();
        w.on_request(&req(CDS, "", &[], None), now());
        let n1 = sent(&mut w, CDS, n(1));
        sent(&mut w, CDS, n(2));
        for nonce in [n1.as_str(), "garbage", "ffffffffffffffff-99"] {
            assert_eq!(
                w.on_request(&req(CDS, nonce, &[], None), now()),
                Decision::StaleNonce
            );
            assert_eq!(
                w.on_request(&req(CDS, nonce, &[], Some("old")), now()),
                Decision::StaleNonce
            );
        }
        let s = &w.get(CDS).unwrap().sync;
        assert_eq!(s.nonce_acked, None);
        assert_eq!(s.last_error, None);
    }

    #[test]
    fn eds_responds_only_when_names_are_added() {
        let mut w = WatchedResources::default();
        let a = names(&["a"]);
        let ab = names(&["a", "b"]);
        let b = names(&["b"]);
        assert_eq!(
            w.on_request(&req(EDS, "", &a, None), now()),
            Decision::Respond
        );
        let n1 = sent(&mut w, EDS, n(1));
        assert_eq!(
            w.on_request(&req(EDS, &n1, &ab, None), now()),
            Decision::Respond
        );
        let n2 = sent(&mut w, EDS, n(2));
        assert_eq!(w.on_request(&req(EDS, &n2, &b, None), now()), Decision::Ack);
        assert_eq!(w.get(EDS).unwrap().names.as_ref().unwrap().len(), 1);
        assert_eq!(
            w.on_request(&req(EDS, &n2, &[], None), now()),
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
