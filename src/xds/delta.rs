//! Delta (incremental) ADS: `DeltaAggregatedResources` on the same port as State of the World.
//!
//! Per stream and type it keeps the subscription (wildcard or named), the version of every
//! resource the proxy holds, and nonces; each response carries only resources whose content
//! changed and the names that went away (`removed_resources`). A changed cluster is followed by
//! its endpoints again, as Envoy re-warms it. The pure bookkeeping ([`DeltaWatch`]) is
//! unit-tested; the stream task only moves messages.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource as DeltaResource,
};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::model::proxy::Proxy;
use crate::status::TypeSyncState;
use crate::translate::{self, ResourceType};
use crate::xds::DiscoveryServer;
use crate::xds::push_queue::PushQueue;
use crate::xds::server::{connecting_proxy, control_plane_identifier, sync_state};

/// The largest delta response, in resource bytes (a single larger resource goes alone).
pub const RESPONSE_CHUNK_BYTES: usize = 64 * 1024;

/// A resource's version: the digest of its (canonical) bytes made at generation, equal on
/// every replica.
pub fn resource_version(r: &translate::Resource) -> String {
    hex::encode(&r.digest[..8])
}

/// One type on one delta stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeltaWatch {
    /// Subscribed to everything (`*`, or no names on a wildcard type's first request).
    pub wildcard: bool,
    pub subscribed: BTreeSet<String>,
    /// What the proxy holds: resource name → version.
    pub held: BTreeMap<String, String>,
    pub nonce_sent: String,
    pub nonce_acked: String,
    /// Digest of everything held after the last response, for status.
    pub version_sent: String,
    pub version_acked: String,
    pub last_error: String,
    pub last_sent: Option<SystemTime>,
    pub last_acked: Option<SystemTime>,
    /// Nothing sent yet on this type: the first response goes out even when empty.
    pub answered: bool,
}

/// What a response for one type carries.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DeltaUpdate {
    /// Names of resources to (re)send.
    pub send: Vec<String>,
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
    pub initial_versions: BTreeMap<String, String>,
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
        let DeltaRequest {
            wildcard_type,
            subscribe,
            unsubscribe,
            initial_versions,
            response_nonce,
            error,
        } = req;
        let (wildcard_type, response_nonce, error) = (*wildcard_type, *response_nonce, *error);
        let first = !self.answered && response_nonce.is_empty();
        if first {
            self.held.extend(initial_versions.clone());
            if wildcard_type && subscribe.is_empty() {
                self.wildcard = true;
            }
        }
        let mut added = false;
        for name in subscribe.iter() {
            if name == "*" {
                added |= !self.wildcard;
                self.wildcard = true;
            } else {
                added |= self.subscribed.insert(name.clone());
            }
        }
        for name in unsubscribe.iter() {
            if name == "*" {
                self.wildcard = false;
            } else {
                self.subscribed.remove(name);
                // Envoy forgets an unsubscribed resource; a later subscribe must resend it.
                self.held.remove(name);
            }
        }
        if !response_nonce.is_empty() && response_nonce == self.nonce_sent {
            if let Some(e) = error {
                self.last_error = e.to_string();
                if !added {
                    return DeltaDecision::Nack;
                }
            } else {
                self.nonce_acked = response_nonce.to_string();
                self.version_acked = self.version_sent.clone();
                self.last_acked = Some(now);
                self.last_error.clear();
            }
        }
        if first || added {
            DeltaDecision::Respond
        } else if error.is_some() {
            DeltaDecision::Nack
        } else {
            DeltaDecision::Ack
        }
    }

    /// Whether the proxy wants `name` of this type.
    fn wants(&self, name: &str) -> bool {
        self.wildcard || self.subscribed.contains(name)
    }

    /// The difference between what the proxy holds and `current` (name → version, for every
    /// resource of the type that exists now).
    pub fn diff(&self, current: &BTreeMap<String, String>) -> DeltaUpdate {
        let send = current
            .iter()
            .filter(|(name, version)| self.wants(name) && self.held.get(*name) != Some(*version))
            .map(|(name, _)| name.clone())
            .collect();
        let removed = self
            .held
            .keys()
            .filter(|name| !current.contains_key(*name) || !self.wants(name))
            .cloned()
            .collect();
        DeltaUpdate { send, removed }
    }

    /// Records a response: the proxy now holds `sent` at these versions and not `removed`.
    pub fn on_sent(
        &mut self,
        sent: &[(String, String)],
        removed: &[String],
        nonce: &str,
        now: SystemTime,
    ) {
        for (name, version) in sent {
            self.held.insert(name.clone(), version.clone());
        }
        for name in removed {
            self.held.remove(name);
        }
        let mut h = Sha256::new();
        for (name, version) in &self.held {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(version.as_bytes());
            h.update([0]);
        }
        self.version_sent = hex::encode(&h.finalize()[..8]);
        self.nonce_sent = nonce.to_string();
        self.last_sent = Some(now);
        self.answered = true;
    }
}

/// State of one delta stream.
struct DeltaConnection {
    id: String,
    proxy: Proxy,
    server: Arc<DiscoveryServer>,
    watches: BTreeMap<ResourceType, DeltaWatch>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    nonce_counter: u64,
}

pub(crate) async fn run_delta_stream(
    server: Arc<DiscoveryServer>,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
) -> Result<(), Status> {
    server.connect_limiter.acquire().await;
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    let proxy = connecting_proxy(&server, first.node.as_ref(), "DeltaDiscoveryRequest")?;
    let (id, queue) = server.register(&proxy);
    server
        .metrics
        .delta_connections
        .fetch_add(1, Ordering::Relaxed);
    tracing::info!(connection = %id, node = %proxy.id, "proxy connected (delta xDS)");
    let mut conn = DeltaConnection {
        id: id.clone(),
        proxy,
        server: server.clone(),
        watches: BTreeMap::new(),
        tx,
        nonce_counter: 0,
    };
    conn.record_status();
    let result = conn.serve(first, &mut inbound, &queue).await;
    server.deregister(&id);
    tracing::info!(connection = %id, "proxy disconnected");
    result
}

impl DeltaConnection {
    async fn serve(
        &mut self,
        first: DeltaDiscoveryRequest,
        inbound: &mut Streaming<DeltaDiscoveryRequest>,
        queue: &PushQueue,
    ) -> Result<(), Status> {
        self.handle_request(first).await?;
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(req)) => self.handle_request(req).await?,
                    Ok(None) => return Ok(()),
                    Err(status) => {
                        tracing::debug!(connection = %self.id, error = %status, "stream closed by peer");
                        return Ok(());
                    }
                },
                req = queue.next() => {
                    let server = self.server.clone();
                    let _permit = server.push_throttle.acquire().await;
                    self.push_changed(req.full).await?;
                }
            }
        }
    }

    async fn handle_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(connection = %self.id, type_url = %req.type_url, "ignoring delta request for a type navarch does not serve");
            return Ok(());
        };
        let initial: BTreeMap<String, String> = req.initial_resource_versions.into_iter().collect();
        let error = req.error_detail.as_ref().map(|e| e.message.clone());
        let watch = self.watches.entry(kind).or_default();
        let decision = watch.on_request(
            &DeltaRequest {
                wildcard_type: kind.is_wildcard(),
                subscribe: &req.resource_names_subscribe,
                unsubscribe: &req.resource_names_unsubscribe,
                initial_versions: initial,
                response_nonce: &req.response_nonce,
                error: error.as_deref(),
            },
            SystemTime::now(),
        );
        let metrics = &self.server.metrics;
        match decision {
            DeltaDecision::Respond => {
                self.send(kind).await?;
            }
            DeltaDecision::Ack => {
                metrics.acks.fetch_add(1, Ordering::Relaxed);
            }
            DeltaDecision::Nack => {
                metrics.rejects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(connection = %self.id, type_ = %kind, error = error.as_deref().unwrap_or_default(), "NACK: the proxy rejected config and keeps its last good config");
            }
        }
        self.record_status();
        Ok(())
    }

    /// After a snapshot change: send each watched type's changes, in push order. Clusters
    /// that changed get their endpoints again (Envoy re-warms a changed cluster).
    async fn push_changed(&mut self, full: bool) -> Result<(), Status> {
        let kinds: Vec<ResourceType> = ResourceType::PUSH_ORDER
            .into_iter()
            .filter(|k| self.watches.contains_key(k))
            .filter(|k| full || *k == ResourceType::Endpoint)
            .collect();
        for kind in kinds {
            let changed = self.send(kind).await?;
            if kind == ResourceType::Cluster
                && let Some(eds) = self.watches.get_mut(&ResourceType::Endpoint)
            {
                for name in changed {
                    eds.held.remove(&name);
                }
            }
        }
        self.record_status();
        Ok(())
    }

    /// Sends what changed for `kind`; returns the names sent.
    async fn send(&mut self, kind: ResourceType) -> Result<Vec<String>, Status> {
        let push = self.server.push_context();
        let generated = self.server.cache.get_or_generate(
            kind,
            kind.scope_key(&self.proxy, &push),
            &push.version,
            || translate::generate(kind, &self.proxy, &push, None),
        );
        let current: BTreeMap<String, (String, &translate::Resource)> = generated
            .resources
            .iter()
            .map(|r| (r.name.clone(), (resource_version(r), r)))
            .collect();
        let versions: BTreeMap<String, String> = current
            .iter()
            .map(|(n, (v, _))| (n.clone(), v.clone()))
            .collect();
        let watch = self.watches.entry(kind).or_default();
        let update = watch.diff(&versions);
        // The first response on a type always goes out (Envoy waits for it); later ones
        // only when something changed.
        if update.is_empty() && watch.answered {
            return Ok(Vec::new());
        }
        // Large updates go out in several responses of at most RESPONSE_CHUNK_BYTES (the
        // delta protocol allows it): gRPC keeps a per-stream encode buffer as large as the
        // largest message, so chunks bound the memory every connected proxy costs.
        let mut chunks: Vec<Vec<&String>> = vec![Vec::new()];
        let mut chunk_bytes = 0usize;
        for name in &update.send {
            let size = current[name].1.resource.value.len();
            if chunk_bytes + size > RESPONSE_CHUNK_BYTES
                && !chunks.last().is_some_and(Vec::is_empty)
            {
                chunks.push(Vec::new());
                chunk_bytes = 0;
            }
            chunk_bytes += size;
            chunks.last_mut().expect("a chunk").push(name);
        }
        let mut all_sent = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            self.nonce_counter += 1;
            let nonce = format!("{}-{}", &push.version, self.nonce_counter);
            let mut sent = Vec::with_capacity(chunk.len());
            let mut resources = Vec::with_capacity(chunk.len());
            let mut bytes = 0usize;
            for name in chunk {
                let (version, r) = &current[name];
                bytes += r.resource.value.len();
                resources.push(DeltaResource {
                    name: name.clone(),
                    version: version.clone(),
                    resource: Some(r.resource.clone()),
                    ..Default::default()
                });
                sent.push((name.clone(), version.clone()));
            }
            let removed = if i == 0 {
                update.removed.clone()
            } else {
                Vec::new()
            };
            let response = DeltaDiscoveryResponse {
                system_version_info: push.version.clone(),
                resources,
                type_url: kind.type_url().to_string(),
                removed_resources: removed.clone(),
                nonce: nonce.clone(),
                control_plane: Some(ControlPlane {
                    identifier: control_plane_identifier(&self.server.instance_id),
                }),
                ..Default::default()
            };
            self.tx
                .send(Ok(response))
                .await
                .map_err(|_| Status::cancelled("proxy went away"))?;
            let watch = self.watches.entry(kind).or_default();
            watch.on_sent(&sent, &removed, &nonce, SystemTime::now());
            self.server.metrics.count_push(kind, bytes);
            tracing::debug!(connection = %self.id, type_ = %kind, sent = sent.len(), removed = removed.len(), bytes, "delta sent");
            all_sent.extend(sent.into_iter().map(|(n, _)| n));
        }
        Ok(all_sent)
    }

    fn record_status(&self) {
        let types = self
            .watches
            .iter()
            .map(|(kind, w)| {
                (
                    kind.type_url().to_string(),
                    TypeSyncState {
                        nonce_sent: w.nonce_sent.clone(),
                        nonce_acked: w.nonce_acked.clone(),
                        version_sent: w.version_sent.clone(),
                        version_acked: w.version_acked.clone(),
                        last_error: w.last_error.clone(),
                        last_sent: w.last_sent,
                        last_acked: w.last_acked,
                    },
                )
            })
            .collect();
        self.server
            .status
            .upsert(&self.id, sync_state(&self.proxy, types));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn req<'a>(
        wildcard_type: bool,
        subscribe: &'a [String],
        unsubscribe: &'a [String],
        initial: &BTreeMap<String, String>,
        response_nonce: &'a str,
        error: Option<&'a str>,
    ) -> DeltaRequest<'a> {
        DeltaRequest {
            wildcard_type,
            subscribe,
            unsubscribe,
            initial_versions: initial.clone(),
            response_nonce,
            error,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn wildcard_first_request_gets_everything_then_only_changes_and_removals() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        let d = w.on_request(&req(true, &[], &[], &BTreeMap::new(), "", None), now);
        assert_eq!(d, DeltaDecision::Respond);
        assert!(w.wildcard);
        let current = versions(&[("a", "1"), ("b", "1")]);
        let u = w.diff(&current);
        assert_eq!(u.send, names(&["a", "b"]));
        w.on_sent(
            &[("a".into(), "1".into()), ("b".into(), "1".into())],
            &[],
            "n1",
            now,
        );
        assert_eq!(
            w.on_request(&req(true, &[], &[], &BTreeMap::new(), "n1", None), now),
            DeltaDecision::Ack
        );
        assert_eq!(w.nonce_acked, "n1");
        // b changes, a disappears, c appears.
        let u = w.diff(&versions(&[("b", "2"), ("c", "1")]));
        assert_eq!(u.send, names(&["b", "c"]));
        assert_eq!(u.removed, names(&["a"]));
    }

    #[test]
    fn named_subscriptions_get_only_their_names_and_unsubscribe_forgets() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        let x = names(&["x"]);
        let d = w.on_request(&req(false, &x, &[], &BTreeMap::new(), "", None), now);
        assert_eq!(d, DeltaDecision::Respond);
        let current = versions(&[("x", "1"), ("y", "1")]);
        assert_eq!(w.diff(&current).send, names(&["x"]));
        w.on_sent(&[("x".into(), "1".into())], &[], "n1", now);
        // Subscribing to y alongside an ACK responds with y only.
        let y = names(&["y"]);
        let d = w.on_request(&req(false, &y, &[], &BTreeMap::new(), "n1", None), now);
        assert_eq!(d, DeltaDecision::Respond);
        assert_eq!(w.diff(&current).send, names(&["y"]));
        w.on_sent(&[("y".into(), "1".into())], &[], "n2", now);
        let x = names(&["x"]);
        w.on_request(&req(false, &[], &x, &BTreeMap::new(), "n2", None), now);
        assert!(!w.held.contains_key("x"));
        assert!(w.diff(&current).is_empty(), "x unsubscribed, y held");
    }

    #[test]
    fn nack_is_recorded_and_reconnect_sends_only_what_the_proxy_lacks() {
        let now = SystemTime::UNIX_EPOCH;
        let mut w = DeltaWatch::default();
        w.on_request(&req(true, &[], &[], &BTreeMap::new(), "", None), now);
        w.on_sent(&[("a".into(), "1".into())], &[], "n1", now);
        let d = w.on_request(
            &req(true, &[], &[], &BTreeMap::new(), "n1", Some("bad")),
            now,
        );
        assert_eq!(d, DeltaDecision::Nack);
        assert_eq!(w.last_error, "bad");
        assert_eq!(w.nonce_acked, "");

        // A reconnecting proxy names what it holds; only differences go out.
        let mut r = DeltaWatch::default();
        let held = versions(&[("a", "1"), ("gone", "1")]);
        r.on_request(&req(true, &[], &[], &held, "", None), now);
        let u = r.diff(&versions(&[("a", "1"), ("b", "1")]));
        assert_eq!(u.send, names(&["b"]));
        assert_eq!(u.removed, names(&["gone"]));
    }
}
