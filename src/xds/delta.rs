//! Delta (incremental) ADS: `DeltaAggregatedResources` on the same port as State of the World.
//!
//! Per stream and type it keeps the subscription (wildcard or named, as name hashes), the
//! shared set the proxy was last brought up to date with (`base`), and nonces. A push diffs
//! the new set against that base; the diff of two sets is computed once and shared by every
//! stream that holds the same base, so a push costs each proxy only what changed. A changed
//! cluster is followed by its endpoints again, as Envoy re-warms it. The pure bookkeeping
//! ([`DeltaWatch`]) is unit-tested; the stream task only moves messages.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use prost::Message;
use tonic::Status;

use crate::model::proxy::Proxy;
use crate::resource_type::ResourceType;
use crate::status::{ConnectionStatus, Nonce, TypeSyncState};
use crate::xds::DiscoveryServer;
use crate::xds::cache::{EncodedSet, name_hash, resource_version};
use crate::xds::grpc::{Outbox, RequestStream, StreamIo, frame_head};
use crate::xds::server::{finish_stream, next_request, open_stream, serve_registered, stalled};
use crate::xds::throttle::RateLimiter;

/// One type on one delta stream.
#[derive(Debug, Default)]
pub struct DeltaWatch {
    /// Subscribed to everything (`*`, or no names on a wildcard type's first request).
    pub wildcard: bool,
    /// Names subscribed to explicitly, as hashes.
    pub subscribed: BTreeSet<u64>,
    /// The set the proxy was last brought up to date with: it holds exactly the resources of
    /// `base` it wanted then (minus those unsubscribed since).
    base: Option<Arc<EncodedSet>>,
    /// Before the first response: what a reconnecting proxy says it holds (hash → (name,
    /// version)).
    initial: HashMap<u64, (String, String)>,
    /// Names subscribed since the last response: not held, sent if they exist.
    fresh: Vec<u64>,
    /// Names to resend even if unchanged (the endpoints of a changed cluster).
    resend: Vec<u64>,
    pub sync: TypeSyncState,
    /// Nothing sent yet on this type: the first response goes out even when empty.
    pub answered: bool,
}

/// What a response for one type carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeltaUpdate {
    /// Positions (in the current set) of the resources to (re)send.
    pub send: Vec<usize>,
    pub removed: Vec<String>,
}

impl DeltaUpdate {
    pub fn is_empty(&self) -> bool {
        self.send.is_empty() && self.removed.is_empty()
    }
}

/// The parts of a DeltaDiscoveryRequest the bookkeeping looks at.
#[derive(Debug, Clone, Default)]
pub struct DeltaRequest<'a> {
    /// CDS and LDS: no names on the first request means everything.
    pub wildcard_type: bool,
    pub subscribe: &'a [String],
    pub unsubscribe: &'a [String],
    /// What a reconnecting proxy already holds.
    pub initial_versions: Vec<(String, String)>,
    pub response_nonce: &'a str,
    /// error_detail.message of a NACK.
    pub error: Option<&'a str>,
}

/// What a request asks of a type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaDecision {
    /// Compute and send what changed (new subscription, or first request).
    Respond,
    /// ACK of a response: recorded.
    Ack,
    /// NACK: recorded; nothing is resent, the proxy keeps its last good config.
    Nack,
}

impl DeltaWatch {
    /// Applies a request's subscription changes, ACK/NACK; says whether to respond.
    pub fn on_request(&mut self, req: &DeltaRequest<'_>, now: SystemTime) -> DeltaDecision {
        let first = !self.answered && req.response_nonce.is_empty();
        if first {
            for (name, version) in &req.initial_versions {
                self.initial
                    .insert(name_hash(name), (name.clone(), version.clone()));
            }
            if req.wildcard_type && req.subscribe.is_empty() {
                self.wildcard = true;
            }
        }
        let mut added = false;
        for name in req.subscribe {
            if name == "*" {
                added |= !self.wildcard;
                self.wildcard = true;
            } else {
                let h = name_hash(name);
                if self.subscribed.insert(h) {
                    added = true;
                    self.fresh.push(h);
                }
            }
        }
        for name in req.unsubscribe {
            if name == "*" {
                self.wildcard = false;
            } else {
                // Envoy forgets an unsubscribed resource; a later subscribe must resend it.
                let h = name_hash(name);
                self.subscribed.remove(&h);
                self.initial.remove(&h);
            }
        }
        if let Some(nonce) = self.sync.is_current(req.response_nonce) {
            match req.error {
                Some(e) => self.sync.on_nack(e),
                None => self.sync.on_ack(nonce, now),
            }
        }
        if first || added {
            DeltaDecision::Respond
        } else if req.error.is_some() {
            DeltaDecision::Nack
        } else {
            DeltaDecision::Ack
        }
    }

    /// Whether the proxy wants the resource named by `hash`.
    fn wants(&self, hash: u64) -> bool {
        self.wildcard || self.subscribed.contains(&hash)
    }

    /// Asks for the resource named `name` to be sent again on the next response.
    pub fn resend(&mut self, name: &str) {
        self.resend.push(name_hash(name));
    }

    /// What to send to bring the proxy from what it holds to `current`.
    pub fn plan(&self, current: &EncodedSet) -> DeltaUpdate {
        let forced = |h: u64| self.fresh.contains(&h) || self.resend.contains(&h);
        let Some(base) = &self.base else {
            // First response: everything wanted, but what a reconnecting proxy already holds
            // at the same version; and whatever it holds that is gone.
            let send = current.positions(|h, digest| {
                self.wants(h)
                    && self
                        .initial
                        .get(&h)
                        .is_none_or(|(_, v)| *v != resource_version(digest))
            });
            let mut removed: Vec<String> = self
                .initial
                .iter()
                .filter(|(h, _)| current.digest_of(**h).is_none() || !self.wants(**h))
                .map(|(_, (name, _))| name.clone())
                .collect();
            removed.sort();
            return DeltaUpdate { send, removed };
        };
        let diff = current.diff_from(base);
        let mut send: Vec<usize> = diff
            .changed
            .iter()
            .copied()
            .filter(|&p| self.wants(current.hash_at(p)))
            .collect();
        if !self.fresh.is_empty() || !self.resend.is_empty() {
            send.extend(current.positions(|h, _| forced(h) && self.wants(h)));
            send.sort_unstable();
            send.dedup();
        }
        let removed = diff
            .removed
            .iter()
            .filter(|(h, _)| self.wants(*h) && !self.fresh.contains(h))
            .map(|(_, name)| name.to_string())
            .collect();
        DeltaUpdate { send, removed }
    }

    /// Records a response: the proxy now holds `current`'s resources that it wants.
    pub fn on_sent(&mut self, current: &Arc<EncodedSet>, nonce: Nonce, now: SystemTime) {
        self.rebase(current);
        self.sync.on_sent(nonce, now);
        self.answered = true;
    }

    /// Records that the proxy holds `current`'s resources that it wants without a response
    /// (nothing it wants changed).
    pub fn rebase(&mut self, current: &Arc<EncodedSet>) {
        self.base = Some(current.clone());
        self.initial = HashMap::new();
        self.fresh = Vec::new();
        self.resend = Vec::new();
    }
}

/// Runs one delta stream to its end: every outcome ends up in the stream's trailers.
pub(crate) async fn run_delta_stream(
    server: Arc<DiscoveryServer>,
    mut io: StreamIo<DeltaDiscoveryRequest>,
) {
    let result = serve_delta_stream(&server, &mut io.inbound, &io.outbox).await;
    finish_stream(io, result, "delta ADS");
}

async fn serve_delta_stream(
    server: &Arc<DiscoveryServer>,
    inbound: &mut RequestStream<DeltaDiscoveryRequest>,
    outbox: &Arc<Outbox>,
) -> Result<(), Status> {
    let Some(opened) = open_stream(server, inbound, outbox).await? else {
        return Ok(());
    };
    let (first, proxy, id, handle, span) = opened.into_parts();
    server
        .metrics
        .delta_connections
        .fetch_add(1, Ordering::Relaxed);
    let mut conn = DeltaConnection {
        proxy,
        server: server.clone(),
        watches: Default::default(),
        outbox: outbox.clone(),
        status: handle.status.clone(),
        seq: 0,
    };
    let limits = &server.limits;
    let limiter = RateLimiter::new(limits.requests_per_second, limits.request_burst);
    let work = async {
        conn.handle_request(first)?;
        loop {
            tokio::select! {
                msg = next_request(inbound, &limiter) => match msg? {
                    Some(req) => conn.handle_request(req)?,
                    None => return Ok(()),
                },
                (req, waited) = handle.queue.next() => {
                    server.metrics.count_dequeued(waited);
                    let _permit = server.push_throttle.acquire().await;
                    conn.push_changed(req.full)?;
                    server.metrics.count_converged(&req);
                }
                status = stalled(outbox, server) => return Err(status),
            }
        }
    };
    serve_registered(server, &id, &span, work).await
}

/// State of one delta stream.
struct DeltaConnection {
    proxy: Arc<Proxy>,
    server: Arc<DiscoveryServer>,
    watches: [Option<DeltaWatch>; ResourceType::COUNT],
    outbox: Arc<Outbox>,
    status: Arc<ConnectionStatus>,
    seq: u64,
}

impl DeltaConnection {
    fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring delta request for a type navarch does not serve");
            return Ok(());
        };
        let error = req.error_detail.as_ref().map(|e| e.message.as_str());
        let watch = self.watches[kind.index()].get_or_insert_with(DeltaWatch::default);
        let decision = watch.on_request(
            &DeltaRequest {
                wildcard_type: kind.is_wildcard(),
                subscribe: &req.resource_names_subscribe,
                unsubscribe: &req.resource_names_unsubscribe,
                initial_versions: req
                    .initial_resource_versions
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                response_nonce: &req.response_nonce,
                error,
            },
            SystemTime::now(),
        );
        let metrics = &self.server.metrics;
        match decision {
            DeltaDecision::Respond => {
                self.send(kind)?;
            }
            DeltaDecision::Ack => {
                metrics.acks.fetch_add(1, Ordering::Relaxed);
            }
            DeltaDecision::Nack => {
                let error = error.unwrap_or_default();
                let sources = self
                    .server
                    .on_nack(kind, &self.proxy, error, &req.response_nonce);
                if let Some(w) = self.watches[kind.index()].as_mut() {
                    w.sync.blame(sources);
                }
            }
        }
        self.record(kind);
        Ok(())
    }

    /// After a snapshot change: send each watched type's changes, in push order. Clusters
    /// that changed get their endpoints again (Envoy re-warms a changed cluster).
    fn push_changed(&mut self, full: bool) -> Result<(), Status> {
        for kind in ResourceType::PUSH_ORDER {
            if self.watches[kind.index()].is_none() || (!full && kind != ResourceType::Endpoint) {
                continue;
            }
            let changed = self.send(kind)?;
            if kind == ResourceType::Cluster
                && let Some(eds) = self.watches[ResourceType::Endpoint.index()].as_mut()
            {
                for name in changed {
                    eds.resend(&name);
                }
            }
        }
        Ok(())
    }

    /// Sends what changed for `kind`; returns the names sent.
    fn send(&mut self, kind: ResourceType) -> Result<Vec<String>, Status> {
        let started = Instant::now();
        let push = self.server.push_context();
        let set = self.server.generate(kind, &self.proxy, &push);
        let Some(watch) = self.watches[kind.index()].as_mut() else {
            return Ok(Vec::new());
        };
        let update = watch.plan(&set);
        // The first response on a type always goes out (Envoy waits for it); later ones
        // only when something changed.
        if update.is_empty() && watch.answered {
            watch.rebase(&set);
            return Ok(Vec::new());
        }
        self.seq += 1;
        let nonce = Nonce {
            version: set.version_of(None),
            seq: self.seq,
        };
        let removed = update.removed.len();
        let mut head = crate::xds::cache::delta_head(
            kind,
            nonce.version,
            update.removed,
            &self.server.control_plane,
        )
        .to_vec();
        DeltaDiscoveryResponse {
            nonce: nonce.to_string(),
            ..Default::default()
        }
        .encode(&mut head)
        .expect("Vec grows");
        let parts: Arc<[bytes::Bytes]> = set.delta_slices(&update.send).into();
        let bytes: usize = parts.iter().map(bytes::Bytes::len).sum();
        let framed = frame_head(head.len() + bytes, &head);
        let sending = Instant::now();
        self.outbox
            .put(kind, framed, parts)
            .map_err(|_| Status::cancelled("the proxy went away"))?;
        let send = sending.elapsed();
        watch.on_sent(&set, nonce, SystemTime::now());
        self.server.metrics.count_push(kind, bytes, started, send);
        let sent: Vec<String> = update
            .send
            .iter()
            .map(|p| set.name_at(*p).to_string())
            .collect();
        tracing::debug!(kind = %kind, sent = sent.len(), removed, bytes, "delta sent");
        self.record(kind);
        Ok(sent)
    }

    fn record(&self, kind: ResourceType) {
        self.status
            .set(kind, self.watches[kind.index()].as_ref().map(|w| &w.sync));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::Resource;
    use envoy_types::pb::google::protobuf::Any;

    fn set(pairs: &[(&str, &str)]) -> Arc<EncodedSet> {
        let resources = pairs
            .iter()
            .map(|(n, v)| {
                Resource::from_any(
                    *n,
                    Any {
                        type_url: "t".into(),
                        value: v.as_bytes().to_vec(),
                    },
                )
            })
            .collect();
        Arc::new(EncodedSet::new(ResourceType::Cluster, resources, "cp"))
    }

    fn req<'a>(
        wildcard_type: bool,
        subscribe: &'a [String],
        unsubscribe: &'a [String],
        initial: Vec<(String, String)>,
        response_nonce: &'a str,
        error: Option<&'a str>,
    ) -> DeltaRequest<'a> {
        DeltaRequest {
            wildcard_type,
            subscribe,
            unsubscribe,
            initial_versions: initial,
            response_nonce,
            error,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn sent_names(s: &EncodedSet, u: &DeltaUpdate) -> Vec<String> {
        u.send.iter().map(|p| s.name_at(*p).to_string()).collect()
    }

    fn nonce(seq: u64) -> Nonce {
        Nonce { version: seq, seq }
    }

    #[test]
    fn wildcard_first_request_gets_everything_then_only_changes_and_removals() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        let d = w.on_request(&req(true, &[], &[], vec![], "", None), now);
        assert_eq!(d, DeltaDecision::Respond);
        assert!(w.wildcard);
        let v1 = set(&[("a", "1"), ("b", "1")]);
        let u = w.plan(&v1);
        assert_eq!(sent_names(&v1, &u), names(&["a", "b"]));
        w.on_sent(&v1, nonce(1), now);
        let n1 = nonce(1).to_string();
        assert_eq!(
            w.on_request(&req(true, &[], &[], vec![], &n1, None), now),
            DeltaDecision::Ack
        );
        assert_eq!(w.sync.nonce_acked, Some(nonce(1)));
        // b changes, a disappears, c appears.
        let v2 = set(&[("b", "2"), ("c", "1")]);
        let u = w.plan(&v2);
        assert_eq!(sent_names(&v2, &u), names(&["b", "c"]));
        assert_eq!(u.removed, names(&["a"]));
        // The diff against a base is computed once and shared.
        let other = DeltaWatch {
            wildcard: true,
            base: Some(v1.clone()),
            ..Default::default()
        };
        assert_eq!(other.plan(&v2), u);
        assert_eq!(v2.diffs_computed(), 1);
    }

    #[test]
    fn named_subscriptions_get_only_their_names_and_unsubscribe_forgets() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        let x = names(&["x"]);
        let d = w.on_request(&req(false, &x, &[], vec![], "", None), now);
        assert_eq!(d, DeltaDecision::Respond);
        let current = set(&[("x", "1"), ("y", "1")]);
        assert_eq!(sent_names(&current, &w.plan(&current)), names(&["x"]));
        w.on_sent(&current, nonce(1), now);
        // Subscribing to y alongside an ACK responds with y only.
        let y = names(&["y"]);
        let n1 = nonce(1).to_string();
        let d = w.on_request(&req(false, &y, &[], vec![], &n1, None), now);
        assert_eq!(d, DeltaDecision::Respond);
        assert_eq!(sent_names(&current, &w.plan(&current)), names(&["y"]));
        w.on_sent(&current, nonce(2), now);
        let n2 = nonce(2).to_string();
        w.on_request(&req(false, &[], &x, vec![], &n2, None), now);
        assert!(w.plan(&current).is_empty(), "x unsubscribed, y held");
        // Resubscribing to x sends it again: Envoy forgot it.
        w.on_request(&req(false, &x, &[], vec![], &n2, None), now);
        assert_eq!(sent_names(&current, &w.plan(&current)), names(&["x"]));
    }

    #[test]
    fn nack_is_recorded_and_reconnect_sends_only_what_the_proxy_lacks() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        w.on_request(&req(true, &[], &[], vec![], "", None), now);
        let v1 = set(&[("a", "1")]);
        w.on_sent(&v1, nonce(1), now);
        let n1 = nonce(1).to_string();
        let d = w.on_request(&req(true, &[], &[], vec![], &n1, Some("bad")), now);
        assert_eq!(d, DeltaDecision::Nack);
        assert_eq!(w.sync.last_error.as_deref(), Some("bad"));
        assert_eq!(w.sync.nonce_acked, None);

        // A reconnecting proxy names what it holds; only differences go out.
        let current = set(&[("a", "1"), ("b", "1")]);
        let a_version = current
            .iter()
            .find(|(n, _, _)| *n == "a")
            .map(|(_, _, d)| resource_version(d))
            .unwrap();
        let mut r = DeltaWatch::default();
        let held = vec![
            ("a".to_string(), a_version),
            ("gone".to_string(), "1".to_string()),
        ];
        r.on_request(&req(true, &[], &[], held, "", None), now);
        let u = r.plan(&current);
        assert_eq!(sent_names(&current, &u), names(&["b"]));
        assert_eq!(u.removed, names(&["gone"]));
    }

    #[test]
    fn resend_forces_unchanged_resources() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        w.on_request(&req(true, &[], &[], vec![], "", None), now);
        let v1 = set(&[("a", "1"), ("b", "1")]);
        w.on_sent(&v1, nonce(1), now);
        assert!(w.plan(&v1).is_empty());
        w.resend("b");
        assert_eq!(sent_names(&v1, &w.plan(&v1)), names(&["b"]));
    }
}
