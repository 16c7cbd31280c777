//! The ADS gRPC transport: our own `AggregatedDiscoveryService` on tonic's router, served by
//! hyper with HTTP/2 settings chosen for thousands of mostly idle streams.
//!
//! Requests are decoded straight from the received HTTP/2 chunks ([`RequestStream`]). Responses do not go
//! through tonic's encoder (which keeps a per-stream buffer as large as the largest message
//! ever sent): each stream's body is an [`Outbox`] of pre-framed, reference-counted
//! [`Bytes`], latest-wins per type, so a slow proxy holds at most one pending response of each
//! type, as references to encodings every other stream shares.
//!
//! Owns framing, the outbox, connection limits and the accept loop; the protocol (ACK/NACK,
//! what to send) is `server` and `delta`'s.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use futures::task::AtomicWaker;
use http_body::Frame;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tonic::Status;

use crate::resource_type::ResourceType;
use crate::xds::DiscoveryServer;

/// The gRPC service name Envoy calls.
pub const SERVICE_NAME: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const SOTW_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// Limits of the ADS transport (flags of `navarch discovery`).
#[derive(Debug, Clone)]
pub struct AdsLimits {
    /// A stream that has a response waiting and sent nothing for this long is cut (istiod's
    /// PILOT_XDS_SEND_TIMEOUT). Zero disables it.
    pub send_timeout: Duration,
    /// Live ADS streams from one peer address; more are refused with RESOURCE_EXHAUSTED.
    /// Zero means unlimited.
    pub max_streams_per_peer: usize,
    /// Requests per second one stream may send (burst: `request_burst`); beyond that the
    /// stream is read more slowly (HTTP/2 flow control holds the client back).
    pub requests_per_second: f64,
    pub request_burst: f64,
    /// Largest request message accepted (OUT_OF_RANGE beyond).
    pub max_request_bytes: usize,
}

impl Default for AdsLimits {
    fn default() -> Self {
        AdsLimits {
            send_timeout: Duration::from_secs(30),
            max_streams_per_peer: 1024,
            requests_per_second: 100.0,
            request_burst: 1000.0,
            max_request_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One response waiting in an outbox: its per-stream head (gRPC frame header and nonce) and
/// the shared parts.
#[derive(Debug)]
struct Pending {
    head: Bytes,
    parts: Arc<[Bytes]>,
    queued: Instant,
}

#[derive(Debug, Default)]
struct OutboxState {
    slots: [Option<Pending>; ResourceType::COUNT],
    /// Set once the stream ends: the status its trailers carry.
    end: Option<Status>,
    /// The body was dropped (the peer went away or reset the stream).
    gone: bool,
    /// When the body last took a frame (the stream's send progress).
    progress: Option<Instant>,
}

/// A stream's outgoing responses: one slot per type, latest wins, drained in push order.
#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    waker: AtomicWaker,
}

/// The peer stopped reading for good (the response body was dropped).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the proxy went away")]
pub struct Gone;

impl Outbox {
    /// Queues a response for `kind`, replacing one of that type not yet taken (whose nonce
    /// the proxy will then never see).
    pub fn put(&self, kind: ResourceType, head: Bytes, parts: Arc<[Bytes]>) -> Result<(), Gone> {
        {
            let mut s = self.state.lock().expect("outbox lock");
            if s.gone {
                return Err(Gone);
            }
            s.slots[kind.index()] = Some(Pending {
                head,
                parts,
                queued: Instant::now(),
            });
        }
        self.waker.wake();
        Ok(())
    }

    /// Ends the stream with `status` in its trailers once everything queued is sent.
    pub fn finish(&self, status: Status) {
        self.state.lock().expect("outbox lock").end = Some(status);
        self.waker.wake();
    }

    /// Since when the stream has been stalled: a response is waiting and nothing was taken
    /// since it was queued (a slow reader that makes progress is not stalled).
    pub fn stalled_since(&self) -> Option<Instant> {
        let s = self.state.lock().expect("outbox lock");
        let oldest = s.slots.iter().flatten().map(|p| p.queued).min()?;
        Some(s.progress.map_or(oldest, |p| p.max(oldest)))
    }

    /// Responses waiting to be taken.
    pub fn pending(&self) -> usize {
        let s = self.state.lock().expect("outbox lock");
        s.slots.iter().flatten().count()
    }

    pub fn is_gone(&self) -> bool {
        self.state.lock().expect("outbox lock").gone
    }
}

/// The largest slice of a shared part handed to hyper at once.
const FRAME_SLICE: usize = 64 * 1024;

/// A message being handed to hyper: its head (until taken), its parts, the next part and the
/// offset in it.
type Sending = (Option<Bytes>, Arc<[Bytes]>, usize, usize);

/// The response body of one stream: frames from its outbox, then the trailers.
struct OutboxBody {
    outbox: Arc<Outbox>,
    /// The message being sent.
    current: Option<Sending>,
    done: bool,
}

impl Drop for OutboxBody {
    fn drop(&mut self) {
        let mut s = self.outbox.state.lock().expect("outbox lock");
        s.gone = true;
        s.slots = Default::default();
    }
}

impl http_body::Body for OutboxBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            if let Some((head, parts, next, offset)) = &mut this.current {
                let frame = if let Some(h) = head.take() {
                    Some(h)
                } else if let Some(part) = parts.get(*next) {
                    // Large parts go out in slices: hyper takes a frame only when the stream
                    // can send, so each slice taken is progress the send timeout sees.
                    let end = (*offset + FRAME_SLICE).min(part.len());
                    let slice = part.slice(*offset..end);
                    if end == part.len() {
                        *next += 1;
                        *offset = 0;
                    } else {
                        *offset = end;
                    }
                    Some(slice)
                } else {
                    None
                };
                match frame {
                    Some(data) => {
                        this.outbox.state.lock().expect("outbox lock").progress =
                            Some(Instant::now());
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    None => this.current = None,
                }
            }
            if this.done {
                return Poll::Ready(None);
            }
            this.outbox.waker.register(cx.waker());
            let mut s = this.outbox.state.lock().expect("outbox lock");
            if let Some(p) = s.slots.iter_mut().find_map(Option::take) {
                this.current = Some((Some(p.head), p.parts, 0, 0));
                continue;
            }
            if let Some(status) = s.end.take() {
                this.done = true;
                let mut trailers = http::HeaderMap::new();
                if status.add_header(&mut trailers).is_err() {
                    trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
                }
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Pending;
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.current.is_none()
    }
}

/// The gRPC frame header (uncompressed, `len` bytes) followed by `rest`, in one buffer.
pub fn frame_head(len: usize, rest: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + rest.len());
    b.put_u8(0);
    b.put_u32(len as u32);
    b.put_slice(rest);
    b.freeze()
}

/// A stream of gRPC request messages read straight from the HTTP/2 body: each message is
/// decoded from the received chunks (copied only when it spans several), so no buffer
/// outlives the message it held. (tonic's `Streaming` keeps one buffer per stream as large as
/// the largest request ever received: an EDS request naming thousands of clusters, kept by
/// every idle stream.)
pub struct RequestStream<T> {
    body: tonic::body::Body,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    /// Length of the message whose header was read, while its body is awaited.
    body_len: Option<usize>,
    max_message_bytes: usize,
    ended: bool,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> RequestStream<T> {
    pub fn new(body: tonic::body::Body, max_message_bytes: usize) -> Self {
        RequestStream {
            body,
            chunks: VecDeque::new(),
            buffered: 0,
            body_len: None,
            max_message_bytes,
            ended: false,
            _message: PhantomData,
        }
    }

    /// The next message; `None` once the client closed its side. Cancel-safe: everything
    /// received is kept in `self` until a message is complete.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        use http_body_util::BodyExt;
        loop {
            if let Some(msg) = self.decode()? {
                return Ok(Some(msg));
            }
            if self.ended {
                return if self.buffered > 0 || self.body_len.is_some() {
                    Err(Status::internal(
                        "the request stream ended inside a message (unexpected EOF)",
                    ))
                } else {
                    Ok(None)
                };
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        self.buffered += data.len();
                        self.chunks.push_back(data);
                    }
                }
                Some(Err(status)) if status.code() == tonic::Code::Cancelled => self.ended = true,
                Some(Err(status)) => return Err(status),
                None => self.ended = true,
            }
        }
    }

    /// Takes `n` buffered bytes (a slice of one chunk when it holds them all).
    fn take(&mut self, n: usize) -> Bytes {
        self.buffered -= n;
        if let Some(front) = self.chunks.front_mut()
            && front.len() >= n
        {
            let out = front.split_to(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let mut front = self
                .chunks
                .pop_front()
                .expect("buffered bytes are in chunks");
            let want = n - out.len();
            if front.len() > want {
                out.put_slice(&front.split_to(want));
                self.chunks.push_front(front);
            } else {
                out.put_slice(&front);
            }
        }
        out.freeze()
    }

    fn decode(&mut self) -> Result<Option<T>, Status> {
        let len = match self.body_len {
            Some(len) => len,
            None => {
                if self.buffered < 5 {
                    return Ok(None);
                }
                let header = self.take(5);
                if header[0] != 0 {
                    return Err(Status::internal(format!(
                        "protocol error: received a message with compressed-flag {} but no grpc-encoding: send uncompressed messages",
                        header[0]
                    )));
                }
                let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                if len > self.max_message_bytes {
                    return Err(Status::out_of_range(format!(
                        "Error, decoded message length too large: found {len} bytes, the limit is: {} bytes (--xds-max-request-bytes)",
                        self.max_message_bytes
                    )));
                }
                self.body_len = Some(len);
                len
            }
        };
        if self.buffered < len {
            return Ok(None);
        }
        self.body_len = None;
        let bytes = self.take(len);
        T::decode(bytes)
            .map(Some)
            .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
    }
}

/// Live streams per peer address.
#[derive(Debug, Default)]
pub struct PeerStreams {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// A stream's place in its peer's count, given back on drop.
#[derive(Debug)]
pub struct PeerSlot {
    streams: Arc<PeerStreams>,
    ip: Option<IpAddr>,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut c = self.streams.counts.lock().expect("peer streams lock");
            if let Some(n) = c.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.remove(&ip);
                }
            }
        }
    }
}

impl PeerStreams {
    /// Takes a place for a new stream from `peer`, unless it already has `limit` (0: no limit).
    pub fn admit(self: &Arc<Self>, peer: Option<SocketAddr>, limit: usize) -> Option<PeerSlot> {
        let Some(ip) = peer.map(|p| p.ip()) else {
            return Some(PeerSlot {
                streams: self.clone(),
                ip: None,
            });
        };
        let mut c = self.counts.lock().expect("peer streams lock");
        let n = c.entry(ip).or_default();
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            streams: self.clone(),
            ip: Some(ip),
        })
    }
}

/// What a stream task is handed: its requests, its outbox, its peer and its place in the
/// peer's count.
pub struct StreamIo<Req> {
    pub inbound: RequestStream<Req>,
    pub outbox: Arc<Outbox>,
    pub peer: Option<SocketAddr>,
    pub slot: PeerSlot,
}

/// The peer address of a request, put in its extensions by the accept loop.
#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// `AggregatedDiscoveryService` on tonic's router.
#[derive(Debug, Clone)]
pub struct AdsGrpc {
    server: Arc<DiscoveryServer>,
    peers: Arc<PeerStreams>,
}

impl AdsGrpc {
    pub fn new(server: Arc<DiscoveryServer>) -> AdsGrpc {
        AdsGrpc {
            server,
            peers: Arc::default(),
        }
    }

    fn response(outbox: Arc<Outbox>) -> http::Response<tonic::body::Body> {
        http::Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .body(tonic::body::Body::new(OutboxBody {
                outbox,
                current: None,
                done: false,
            }))
            .expect("static response parts")
    }

    fn open<Req>(
        &self,
        req: http::Request<tonic::body::Body>,
    ) -> Result<(StreamIo<Req>, http::Response<tonic::body::Body>), Status>
    where
        Req: prost::Message + Default + Send + 'static,
    {
        if !self.server.is_ready() {
            // istiod's answer before its caches have synced; Envoy retries with backoff.
            return Err(Status::unavailable(
                "server is not ready to serve discovery information: waiting for the first complete list from the Kubernetes API server; the proxy retries",
            ));
        }
        if let Some(enc) = req.headers().get("grpc-encoding")
            && enc != "identity"
        {
            return Err(Status::unimplemented(format!(
                "grpc-encoding {enc:?} is not supported: send uncompressed messages"
            )));
        }
        let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
        let limits = &self.server.limits;
        let Some(slot) = self.peers.admit(peer, limits.max_streams_per_peer) else {
            self.server
                .metrics
                .refused_streams
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(Status::resource_exhausted(format!(
                "too many ADS streams from {}: at most {} per peer (--xds-max-streams-per-peer)",
                peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                limits.max_streams_per_peer
            )));
        };
        let inbound = RequestStream::new(req.into_body(), limits.max_request_bytes);
        let outbox = Arc::new(Outbox::default());
        let response = Self::response(outbox.clone());
        Ok((
            StreamIo {
                inbound,
                outbox,
                peer,
                slot,
            },
            response,
        ))
    }
}

impl tonic::server::NamedService for AdsGrpc {
    const NAME: &'static str = SERVICE_NAME;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for AdsGrpc {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let response = match req.uri().path() {
            SOTW_PATH => self.open::<DiscoveryRequest>(req).map(|(io, response)| {
                tokio::spawn(crate::xds::server::run_stream(self.server.clone(), io));
                response
            }),
            DELTA_PATH => self
                .open::<DeltaDiscoveryRequest>(req)
                .map(|(io, response)| {
                    tokio::spawn(crate::xds::delta::run_delta_stream(self.server.clone(), io));
                    response
                }),
            other => Err(Status::unimplemented(format!(
                "{other}: not a method of {SERVICE_NAME}"
            ))),
        };
        std::future::ready(Ok(response.unwrap_or_else(|s| s.into_http())))
    }
}

/// HTTP/2 settings of the ADS port.
fn http2(builder: &mut hyper::server::conn::http2::Builder<hyper_util::rt::TokioExecutor>) {
    builder
        // Requests are small; a stream that sends without reading is held back at this.
        .initial_stream_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        // At most this much of a response is queued per stream beyond what the socket took:
        // a proxy that stops reading holds no more (and only references to shared bytes).
        .max_send_buf_size(256 * 1024)
        .max_concurrent_streams(128)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .timer(hyper_util::rt::TokioTimer::new());
}

/// Binds the ADS port with a listen backlog sized for a fleet reconnecting at once (the
/// default of 1024 drops connection attempts when thousands of proxies arrive together).
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts ADS connections on `listener` until it fails: TCP_NODELAY on, HTTP/2 only, each
/// connection served on its own task.
pub async fn serve(listener: TcpListener, server: Arc<DiscoveryServer>) -> std::io::Result<()> {
    let routes = tonic::service::Routes::new(AdsGrpc::new(server));
    let mut builder =
        hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    http2(&mut builder);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient_accept_error(&e) => {
                tracing::warn!(error = %e, "ADS accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let routes = routes.clone();
        let service =
            hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                let mut routes = routes.clone();
                let req = req.map(tonic::body::Body::new);
                async move { tower_service::Service::call(&mut routes, req).await }
            });
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "ADS connection ended");
            }
        });
    }
}

/// Accept errors that concern one connection (or a passing lack of descriptors), not the
/// listener.
fn is_transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted | WouldBlock
    ) || e.raw_os_error().is_some_and(|c| c == 24 || c == 23) // EMFILE, ENFILE
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn outbox_latest_wins_and_drains_in_push_order() {
        let outbox = Arc::new(Outbox::default());
        let mut body = OutboxBody {
            outbox: outbox.clone(),
            current: None,
            done: false,
        };
        let parts =
            |s: &'static str| -> Arc<[Bytes]> { Arc::from([Bytes::from_static(s.as_bytes())]) };
        outbox
            .put(ResourceType::Route, Bytes::from_static(b"r1"), parts("R1"))
            .unwrap();
        outbox
            .put(
                ResourceType::Cluster,
                Bytes::from_static(b"c1"),
                parts("C1"),
            )
            .unwrap();
        // A newer route response replaces the one not yet taken.
        outbox
            .put(ResourceType::Route, Bytes::from_static(b"r2"), parts("R2"))
            .unwrap();
        assert_eq!(outbox.pending(), 2);
        outbox.finish(Status::ok(""));
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap();
            if let Some(d) = frame.data_ref() {
                got.push(String::from_utf8(d.to_vec()).unwrap());
            } else {
                let t = frame.into_trailers().unwrap();
                assert_eq!(t["grpc-status"], "0");
            }
        }
        assert_eq!(got, ["c1", "C1", "r2", "R2"]);
        drop(body);
        assert!(outbox.is_gone());
        assert!(
            outbox
                .put(ResourceType::Cluster, Bytes::new(), parts(""))
                .is_err()
        );
    }

    #[test]
    fn peers_are_limited_and_slots_given_back() {
        let peers = Arc::new(PeerStreams::default());
        let a: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let b: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        let s1 = peers.admit(Some(a), 2).unwrap();
        let _s2 = peers.admit(Some(a), 2).unwrap();
        assert!(peers.admit(Some(a), 2).is_none(), "third stream from a");
        assert!(
            peers.admit(Some(b), 2).is_some(),
            "another peer is not affected"
        );
        drop(s1);
        assert!(peers.admit(Some(a), 2).is_some(), "a slot was given back");
        assert!(peers.admit(Some(a), 0).is_some(), "0 is unlimited");
    }
}
