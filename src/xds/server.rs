//! The ADS gRPC service: one task per stream that answers requests by istiod's rules and
//! delivers queued pushes, recording every send, ACK and NACK in the status store.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use envoy_types::pb::envoy::config::core::v3::ControlPlane;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    },
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::model::proxy::Proxy;
use crate::status::{ProxySyncState, TypeSyncState};
use crate::translate::{self, ResourceType};
use crate::xds::DiscoveryServer;
use crate::xds::cache::content_version;
use crate::xds::connection::{Decision, RequestInfo, WatchedResources};
use crate::xds::push_queue::PushQueue;

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponseStream =
    Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// The tonic service wrapping a [`DiscoveryServer`].
#[derive(Debug, Clone)]
pub struct AdsService {
    server: Arc<DiscoveryServer>,
}

impl AdsService {
    pub fn new(server: Arc<DiscoveryServer>) -> AggregatedDiscoveryServiceServer<Self> {
        AggregatedDiscoveryServiceServer::new(AdsService { server })
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type StreamAggregatedResourcesStream = ResponseStream;
    type DeltaAggregatedResourcesStream = DeltaResponseStream;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        if !self.server.is_ready() {
            // istiod's answer before its caches have synced; Envoy retries with backoff.
            return Err(Status::unavailable(
                "server is not ready to serve discovery information: waiting for the first complete list from the Kubernetes API server; the proxy retries",
            ));
        }
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        // Small: a response waiting here holds its own copy of the resources.
        let (tx, rx) = mpsc::channel(2);
        let server = self.server.clone();
        tokio::spawn(async move {
            if let Err(status) = run_stream(server, inbound, tx.clone()).await {
                tracing::warn!(?peer, error = %status.message(), "ADS stream ended with an error");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        if !self.server.is_ready() {
            return Err(Status::unavailable(
                "server is not ready to serve discovery information: waiting for the first complete list from the Kubernetes API server; the proxy retries",
            ));
        }
        let peer = request.remote_addr();
        let inbound = request.into_inner();
        // Small: a response waiting here holds its own copy of the resources.
        let (tx, rx) = mpsc::channel(2);
        let server = self.server.clone();
        tokio::spawn(async move {
            if let Err(status) =
                crate::xds::delta::run_delta_stream(server, inbound, tx.clone()).await
            {
                tracing::warn!(?peer, error = %status.message(), "delta ADS stream ended with an error");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

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

/// A type's resources selected for one proxy (see `Connection::generate`).
struct Selected {
    generated: Arc<crate::xds::cache::GeneratedResources>,
    indices: Vec<usize>,
    version: String,
}

/// State of one ADS stream.
struct Connection {
    id: String,
    proxy: Proxy,
    watched: WatchedResources,
    server: Arc<DiscoveryServer>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    nonce_counter: u64,
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
    if proxy.labels.is_empty()
        && let Some(labels) = server.push_context().store.pod_labels.get(&proxy.name())
    {
        proxy.labels = labels.clone();
    }
    Ok(proxy)
}

/// A connection's sync state for the status store, from its per-type states.
pub(crate) fn sync_state(
    proxy: &Proxy,
    types: std::collections::BTreeMap<String, TypeSyncState>,
) -> ProxySyncState {
    ProxySyncState {
        proxy: proxy.name(),
        node_id: proxy.id.clone(),
        proxy_type: proxy.node_type.as_str().to_string(),
        cluster_id: proxy.cluster_id.clone(),
        namespace: proxy.namespace.clone(),
        istio_version: proxy.istio_version.clone(),
        types,
    }
}

async fn run_stream(
    server: Arc<DiscoveryServer>,
    mut inbound: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) -> Result<(), Status> {
    server.connect_limiter.acquire().await;
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    let proxy = connecting_proxy(&server, first.node.as_ref(), "DiscoveryRequest")?;
    let (id, queue) = server.register(&proxy);
    tracing::info!(connection = %id, node = %proxy.id, mode = proxy.interception_mode.as_str(), "proxy connected");
    let mut conn = Connection {
        id: id.clone(),
        proxy,
        watched: WatchedResources::default(),
        server: server.clone(),
        tx,
        nonce_counter: 0,
    };
    conn.record_status();
    let result = conn.serve(first, &mut inbound, &queue).await;
    server.deregister(&id);
    tracing::info!(connection = %id, "proxy disconnected");
    result
}

impl Connection {
    async fn serve(
        &mut self,
        first: DiscoveryRequest,
        inbound: &mut Streaming<DiscoveryRequest>,
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

    async fn handle_request(&mut self, req: DiscoveryRequest) -> Result<(), Status> {
        let Some(kind) = ResourceType::from_type_url(&req.type_url) else {
            tracing::debug!(connection = %self.id, type_url = %req.type_url, "ignoring request for a type navarch does not serve");
            return Ok(());
        };
        let info = RequestInfo {
            type_url: req.type_url.clone(),
            response_nonce: req.response_nonce.clone(),
            version_info: req.version_info.clone(),
            resource_names: req.resource_names.clone(),
            error_detail: req.error_detail.as_ref().map(|e| e.message.clone()),
            wildcard: kind.is_wildcard(),
        };
        let decision = self.watched.on_request(&info, SystemTime::now());
        let metrics = &self.server.metrics;
        match decision {
            Decision::Respond => self.send(kind).await?,
            Decision::Ack => {
                metrics.acks.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(connection = %self.id, type_ = %kind, nonce = %info.response_nonce, "ACK");
            }
            Decision::Nack => {
                metrics.rejects.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(connection = %self.id, type_ = %kind, nonce = %info.response_nonce, error = info.error_detail.as_deref().unwrap_or_default(), "NACK: the proxy rejected config and keeps its last good config");
            }
            Decision::StaleNonce => {
                metrics.expired_nonces.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(connection = %self.id, type_ = %kind, nonce = %info.response_nonce, "ignoring request with an expired nonce");
            }
            Decision::Unsubscribe => {}
        }
        self.record_status();
        Ok(())
    }

    /// After a snapshot change: resend every watched type whose content changed (only EDS when
    /// the push is incremental).
    ///
    /// Envoy re-initialises a changed cluster and keeps it warming until it receives that
    /// cluster's endpoints again, and likewise waits on the route configurations of a changed
    /// listener; so after CDS is sent EDS is always resent, and RDS after LDS (istiod resends
    /// every type on a full push).
    async fn push_changed(&mut self, full: bool) -> Result<(), Status> {
        let mut sent_cds = false;
        let mut sent_lds = false;
        for kind in ResourceType::PUSH_ORDER {
            // An incremental push recomputes endpoints only.
            if !full && kind != ResourceType::Endpoint {
                continue;
            }
            let Some(w) = self.watched.get(kind.type_url()) else {
                continue;
            };
            let version_sent = w.version_sent.clone();
            let selected = self.generate(kind);
            let forced = match kind {
                ResourceType::Endpoint => sent_cds,
                ResourceType::Route => sent_lds,
                _ => false,
            };
            if forced || selected.version != version_sent {
                self.send_generated(kind, selected).await?;
                sent_cds |= kind == ResourceType::Cluster;
                sent_lds |= kind == ResourceType::Listener;
            }
        }
        self.record_status();
        Ok(())
    }

    /// What `kind` holds for this proxy now: the shared generated set, the positions the proxy
    /// asked for, and their content version. Nothing is copied until it is sent.
    fn generate(&self, kind: ResourceType) -> Selected {
        let push = self.server.push_context();
        let generated = self.server.cache.get_or_generate(
            kind,
            kind.scope_key(&self.proxy, &push),
            &push.version,
            || translate::generate(kind, &self.proxy, &push, None),
        );
        let names = self.watched.get(kind.type_url()).map(|w| &w.resource_names);
        let indices: Vec<usize> = generated
            .resources
            .iter()
            .enumerate()
            .filter(|(_, r)| kind.is_wildcard() || names.is_none_or(|n| n.contains(&r.name)))
            .map(|(i, _)| i)
            .collect();
        let version = content_version(indices.iter().map(|i| &generated.resources[*i]));
        Selected {
            generated,
            indices,
            version,
        }
    }

    async fn send(&mut self, kind: ResourceType) -> Result<(), Status> {
        let selected = self.generate(kind);
        self.send_generated(kind, selected).await
    }

    async fn send_generated(
        &mut self,
        kind: ResourceType,
        selected: Selected,
    ) -> Result<(), Status> {
        let Selected {
            generated,
            indices,
            version,
        } = selected;
        let resources: Vec<envoy_types::pb::google::protobuf::Any> = indices
            .iter()
            .map(|i| generated.resources[*i].resource.clone())
            .collect();
        drop(generated);
        self.nonce_counter += 1;
        let nonce = format!("{}-{}", version, self.nonce_counter);
        let count = resources.len();
        let bytes: usize = resources.iter().map(|r| r.value.len()).sum();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources,
            type_url: kind.type_url().to_string(),
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
        self.watched
            .on_sent(kind.type_url(), &nonce, &version, SystemTime::now());
        let metrics = &self.server.metrics;
        metrics.count_push(kind, bytes);
        tracing::debug!(connection = %self.id, type_ = %kind, resources = count, bytes, version, "sent");
        Ok(())
    }

    fn record_status(&self) {
        let types = self
            .watched
            .by_type
            .iter()
            .map(|(url, w)| {
                (
                    url.clone(),
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

/// istiod's control plane identifier JSON.
pub(crate) fn control_plane_identifier(id: &str) -> String {
    serde_json::json!({
        "Component": "istiod",
        "ID": id,
        "Info": {"version": env!("CARGO_PKG_VERSION"), "revision": "navarch", "status": "Clean", "tag": env!("CARGO_PKG_VERSION")}
    })
    .to_string()
}
