//! State of the World ADS streams: one task per stream that answers requests by istiod's
//! rules and delivers queued pushes, recording every send, ACK and NACK in the status store.
//!
//! Responses are the shared encodings of `xds::cache` plus a per-stream nonce, put into the
//! stream's outbox (`xds::grpc`); nothing here copies resources.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Message;
use tonic::Status;

use crate::model::proxy::Proxy;
use crate::resource_type::ResourceType;
use crate::status::{ConnectionStatus, Nonce};
use crate::xds::cache::{EncodedSet, SotwBody};
use crate::xds::connection::{Decision, RequestInfo, WatchedResources};
use crate::xds::grpc::{Outbox, RequestStream, StreamIo, frame_head};
use crate::xds::push_queue::PushQueue;
use crate::xds::throttle::RateLimiter;
use crate::xds::{ConnectionHandle, DiscoveryServer};
use tracing::Instrument;

/// Converts node metadata (`google.protobuf.Struct`) to JSON for the model.
pub fn struct_to_json(s: &Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .iter()
        .map(|(k, v)| (k.clone(), value_to_json(v)))
        .collect()
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(struct_to_json(s)),
        Some(Kind::ListValue(l)) => {
            serde_json::Value::Array(l.values.iter().map(value_to_json).collect())
        }
    }
}

/// The proxy a stream's first request names (node id and metadata; labels from its Pod when
/// the metadata carries none). Shared by the SotW and delta streams.
pub(crate) fn connecting_proxy(
    server: &DiscoveryServer,
    node: Option<&envoy_types::pb::envoy::config::core::v3::Node>,
    request: &str,
) -> Result<Proxy, Status> {
    let node = node.ok_or_else(|| {
        Status::invalid_argument(format!(
            "the first {request} must carry node (id and metadata)"
        ))
    })?;
    let metadata = node
        .metadata
        .as_ref()
        .map(struct_to_json)
        .unwrap_or_default();
    let mut proxy = Proxy::from_node(&node.id, &metadata)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let push = server.push_context();
    if proxy.labels.is_empty()
        && let Some(labels) = push.store.pod_labels.get(&proxy.name())
    {
        proxy.labels = labels.clone();
    }
    if proxy.container_ports.is_empty()
        && let Some(ports) = push.store.pod_ports.get(&proxy.name())
    {
        proxy.container_ports = ports.clone();
    }
    Ok(proxy)
}

/// Runs one stream to its end: every outcome ends up in the stream's trailers.
pub(crate) async fn run_stream(server: Arc<DiscoveryServer>, mut io: StreamIo<DiscoveryRequest>) {
    let result = serve_stream(&server, &mut io.inbound, &io.outbox).await;
    finish_stream(io, result, "ADS");
}

/// Ends a stream's response with the outcome's status, logging failures the peer did not
/// cause by going away; then gives up the stream's place in its peer's count (`io.slot`).
pub(crate) fn finish_stream<M>(io: StreamIo<M>, result: Result<(), Status>, what: &str) {
    let (outbox, peer) = (&io.outbox, io.peer);
    match result {
        Ok(()) => outbox.finish(Status::ok("")),
        Err(status) => {
            if outbox.is_gone() {
                tracing::debug!(?peer, error = %status.message(), "{what} stream ended: the proxy went away");
            } else {
                tracing::warn!(?peer, code = ?status.code(), error = %status.message(), "{what} stream ended with an error");
            }
            outbox.finish(status);
        }
    }
    // `io` drops here, and with it the stream's place in its peer's count.
}

/// The request message of a stream (SotW or delta): what `open_stream` reads of it.
pub(crate) trait StreamRequest: prost::Message + Default {
    /// The message's name, for errors.
    const NAME: &'static str;
    /// `sotw` or `delta`, for the span.
    const XDS: &'static str;
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node>;
}

impl StreamRequest for DiscoveryRequest {
    const NAME: &'static str = "DiscoveryRequest";
    const XDS: &'static str = "sotw";
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
}

impl StreamRequest for envoy_types::pb::envoy::service::discovery::v3::DeltaDiscoveryRequest {
    const NAME: &'static str = "DeltaDiscoveryRequest";
    const XDS: &'static str = "delta";
    fn node(&self) -> Option<&envoy_types::pb::envoy::config::core::v3::Node> {
        self.node.as_ref()
    }
}

/// A stream that sent its first request and was admitted: its proxy, registered.
pub(crate) struct Opened<M> {
    pub first: M,
    pub proxy: Arc<Proxy>,
    pub id: String,
    pub handle: Arc<crate::xds::ConnectionHandle>,
    /// `ads{connection, node, xds}`: every line of the stream is logged in it.
    pub span: tracing::Span,
}

impl<M> Opened<M> {
    #[allow(clippy::type_complexity)]
    pub(crate) fn into_parts(
        self,
    ) -> (
        M,
        Arc<Proxy>,
        String,
        Arc<crate::xds::ConnectionHandle>,
        tracing::Span,
    ) {
        (self.first, self.proxy, self.id, self.handle, self.span)
    }
}

/// The first steps of a SotW or delta stream: wait for admission, read the first request,
/// identify its proxy (or refuse the stream), register the connection and open its span.
/// `None` when the peer closed before sending anything.
pub(crate) async fn open_stream<M: StreamRequest>(
    server: &Arc<DiscoveryServer>,
    inbound: &mut RequestStream<M>,
    outbox: &Arc<Outbox>,
) -> Result<Option<Opened<M>>, Status> {
    server.connect_limiter.acquire().await;
    let Some(first) = inbound.message().await? else {
        return Ok(None);
    };
    let proxy = Arc::new(connecting_proxy(server, first.node(), M::NAME)?);
    let xds = M::XDS;
    let (id, handle) = server.register(proxy.clone(), outbox.clone());
    let span = tracing::info_span!("ads", connection = %id, node = %proxy.id, xds);
    tracing::info!(parent: &span, mode = proxy.interception_mode.as_str(), "proxy connected");
    Ok(Some(Opened {
        first,
        proxy,
        id,
        handle,
        span,
    }))
}

async fn serve_stream(
    server: &Arc<DiscoveryServer>,
    inbound: &mut RequestStream<DiscoveryRequest>,
    outbox: &Arc<Outbox>,
) -> Result<(), Status> {
    let Some(opened) = open_stream(server, inbound, outbox).await? else {
        return Ok(());
    };
    let (first, proxy, id, handle, span) = opened.into_parts();
    let mut conn = Connection {
        proxy,
        watched: WatchedResources::default(),
        server: server.clone(),
        outbox: outbox.clone(),
        status: handle.status.clone(),
        seq: 0,
    };
    serve_registered(server, &id, &span, conn.serve(first, inbound, &handle)).await
}

/// Runs a registered stream's `work` in its span, then deregisters the
/// connection `id` and logs the disconnect; the outcome is `work`'s.
pub(crate) async fn serve_registered(
    server: &DiscoveryServer,
    id: &str,
    span: &tracing::Span,
    work: impl Future<Output = Result<(), Status>>,
) -> Result<(), Status> {
    let result = work.instrument(span.clone()).await;
    server.deregister(id);
    tracing::info!(parent: span, "proxy disconnected");
    result
}

/// State of one ADS stream.
struct Connection {
    proxy: Arc<Proxy>,
    watched: WatchedResources,
    server: Arc<DiscoveryServer>,
    outbox: Arc<Outbox>,
    status: Arc<ConnectionStatus>,
    /// Responses sent on this stream (the nonce's sequence number).
    seq: u64,
}

/// Waits until the stream has had a response waiting and sent nothing for longer than the
/// send timeout; never returns when there is no timeout.
pub(crate) async fn stalled(outbox: &Outbox, server: &DiscoveryServer) -> Status {
    let timeout = server.limits.send_timeout;
    loop {
        let since = outbox.stalled_since();
        match since {
            _ if timeout.is_zero() => std::future::pending::<()>().await,
            Some(t) if t.elapsed() >= timeout => {
                server
                    .metrics
                    .stalled_streams
                    .fetch_add(1, Ordering::Relaxed);
                return Status::deadline_exceeded(format!(
                    "the proxy read nothing of its config for {}s (--xds-send-timeout): closing the stream; it reconnects and is sent the current config",
                    timeout.as_secs_f64()
                ));
            }
            Some(t) => tokio::time::sleep_until(t + timeout).await,
            // Nothing waits: look again a timeout later (a response queued meanwhile is
            // at most that old by then).
            None => tokio::time::sleep(timeout).await,
        }
    }
}

/// Reads the next request, at most at the stream's request rate.
pub(crate) async fn next_request<T: prost::Message + Default>(
    inbound: &mut RequestStream<T>,
    limiter: &RateLimiter,
) -> Result<Option<T>, Status> {
    limiter.acquire().await;
    inbound.message().await
}

impl Connection {
    async fn serve(
        &mut self,
        first: DiscoveryRequest,
        inbound: &mut RequestStream<DiscoveryRequest>,
        handle: &ConnectionHandle,
    ) -> Result<(), Status> {
        let limits = &self.server.limits;
        let limiter = RateLimiter::new(limits.requests_per_second, limits.request_burst);
        let queue: &PushQueue = &handle.queue;
        self.handle_request(first)?;
        loop {
            tokio::select! {
                msg = next_request(inbound, &limiter) => match msg? {
                    Some(req) => self.handle_request(req)?,
                    None => return Ok(()),
                },
                (req, waited) = queue.next() => {
                    let server = self.server.clone();
                    server.metrics.count_dequeued(waited);
                    let _permit = server.push_throttle.acquire().await;
                    self.push_changed(req.full)?;
                    server.metrics.count_converged(&req);
                }
                status = stalled(&self.outbox, &self.server) => return Err(status),
            }
        }
    }

    fn handle_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(type_url = %req.type_url, "ignoring request for a type navarch does not serve");
            return Ok(());
        };
        let info = RequestInfo {
            kind,
            response_nonce: &req.response_nonce,
            resource_names: &req.resource_names,
            error_detail: req.error_detail.as_ref().map(|e| e.message.as_str()),
        };
        let decision = self.watched.on_request(&info, SystemTime::now());
        let metrics = &self.server.metrics;
        match decision {
            Decision::Respond => {
                self.send(kind, true)?;
            }
            Decision::Ack => {
                metrics.acks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = %kind, nonce = %req.response_nonce, "ACK");
            }
            Decision::Nack => {
                let error = info.error_detail.unwrap_or_default();
                let sources = self
                    .server
                    .on_nack(kind, &self.proxy, error, &req.response_nonce);
                if let Some(w) = self.watched.get_mut(kind) {
                    w.sync.blame(sources);
                }
            }
            Decision::StaleNonce => {
                metrics.expired_nonces.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(kind = %kind, nonce = %req.response_nonce, "ignoring request with an expired nonce");
            }
            Decision::Unsubscribe => {}
        }
        self.record(kind);
        Ok(())
    }

    /// After a snapshot change: resend every watched type whose content changed (only EDS when
    /// the push is incremental).
    ///
    /// Envoy re-initialises a changed cluster and keeps it warming until it receives that
    /// cluster's endpoints again, and likewise waits on the route configurations of a changed
    /// listener; so after CDS is sent EDS is always resent, and RDS after LDS (istiod resends
    /// every type on a full push).
    fn push_changed(&mut self, full: bool) -> Result<(), Status> {
        let mut sent_cds = false;
        let mut sent_lds = false;
        for kind in ResourceType::PUSH_ORDER {
            // An incremental push recomputes endpoints only.
            if !full && kind != ResourceType::Endpoint {
                continue;
            }
            if self.watched.get(kind).is_none() {
                continue;
            }
            let forced = match kind {
                ResourceType::Endpoint => sent_cds,
                ResourceType::Route => sent_lds,
                _ => false,
            };
            if !full {
                self.send_changes(kind)?;
                continue;
            }
            if self.send(kind, forced)? {
                sent_cds |= kind == ResourceType::Cluster;
                sent_lds |= kind == ResourceType::Listener;
            }
        }
        Ok(())
    }

    /// Sends `kind` when `always` or when its content differs from what was sent last;
    /// returns whether it sent.
    fn send(&mut self, kind: ResourceType, always: bool) -> Result<bool, Status> {
        let started = Instant::now();
        let push = self.server.push_context();
        let set = self.server.generate(kind, &self.proxy, &push);
        let Some(w) = self.watched.get_mut(kind) else {
            return Ok(false);
        };
        // Proxies that asked for exactly what the set holds share its name set.
        if let Some(names) = w.names.take() {
            w.names = Some(names.shared_with(set.names()));
        }
        let wanted = w.names.as_ref();
        if !always && w.sync.nonce_sent.map(|n| n.version) == Some(set.version_of(wanted)) {
            return Ok(false);
        }
        let body = set.sotw(wanted);
        self.deliver(kind, body, set, started)?;
        self.record(kind);
        Ok(true)
    }

    /// An incremental push: sends only what changed since the last response (SotW allows
    /// partial EDS responses; the proxy keeps the clusters not named), or everything when the
    /// proxy may not hold that response yet.
    fn send_changes(&mut self, kind: ResourceType) -> Result<(), Status> {
        let started = Instant::now();
        let push = self.server.push_context();
        let set = self.server.generate(kind, &self.proxy, &push);
        let pending = self.outbox.is_pending(kind);
        let Some(w) = self.watched.get_mut(kind) else {
            return Ok(());
        };
        if let Some(names) = w.names.take() {
            w.names = Some(names.shared_with(set.names()));
        }
        let wanted = w.names.as_ref();
        let sent = w.sync.nonce_sent.map(|n| n.version);
        if sent == Some(set.version_of(wanted)) {
            return Ok(());
        }
        // What the proxy holds (or will, once what it was sent arrives): the last response's
        // set when that response was all it wants of it. A response still waiting in the
        // outbox is replaced by this one, so if that one was partial, this one is a partial
        // from the same base.
        let base = match (&w.last_set, &w.partial_base) {
            (Some(_), Some(base)) if pending => Some(base.clone()),
            (Some(last), _) if !pending && sent == Some(last.version_of(wanted)) => {
                Some(last.clone())
            }
            _ => None,
        };
        let body = match &base {
            Some(base) => set.sotw_since(base, wanted),
            None => set.sotw(wanted),
        };
        self.deliver(kind, body, set, started)?;
        if let Some(w) = self.watched.get_mut(kind) {
            w.partial_base = base;
        }
        self.record(kind);
        Ok(())
    }

    /// Puts one response into the outbox: the shared body after this stream's nonce.
    fn deliver(
        &mut self,
        kind: ResourceType,
        body: SotwBody,
        set: Arc<EncodedSet>,
        started: Instant,
    ) -> Result<(), Status> {
        self.seq += 1;
        let nonce = Nonce {
            version: body.version,
            seq: self.seq,
        };
        let nonce_field = DiscoveryResponse {
            nonce: nonce.to_string(),
            ..Default::default()
        }
        .encode_to_vec();
        let head = frame_head(nonce_field.len() + body.len, &nonce_field);
        let sending = Instant::now();
        self.outbox
            .put(kind, head, body.parts)
            .map_err(|_| Status::cancelled("the proxy went away"))?;
        let send = sending.elapsed();
        if let Some(w) = self.watched.get_mut(kind) {
            w.sync.on_sent(nonce, SystemTime::now());
            w.last_set = Some(set);
            w.partial_base = None;
        }
        self.server
            .metrics
            .count_push(kind, body.len, started, send);
        tracing::debug!(kind = %kind, resources = body.resources, bytes = body.len, version = %crate::status::format_version(body.version), "sent");
        Ok(())
    }

    /// Copies `kind`'s sync state to the status store.
    fn record(&self, kind: ResourceType) {
        self.status
            .set(kind, self.watched.get(kind).map(|w| &w.sync));
    }
}

/// istiod's control plane identifier JSON.
pub(crate) fn control_plane_identifier(id: &str) -> String {
    serde_json::json!({
        "Component": "istiod",
        "ID": id,
        "Info": {"version": env!("CARGO_PKG_VERSION"), "revision": "navarch", "status": "Clean", "tag": env!("CARGO_PKG_VERSION")}
    })
    .to_string()
}
