//! Hostile ADS clients, black-box over a real gRPC connection to a control plane started by
//! the test: a first request without node or with a garbage node id (INVALID_ARGUMENT),
//! unknown type URLs, 100,000 resource names, garbage nonces, bytes that are not protobuf
//! (INTERNAL), a 70 MB message (OUT_OF_RANGE), 1000 requests on one stream. Each is answered or
//! rejected with its gRPC code and a message that says what was wrong, and the server goes on
//! serving another proxy afterwards. Only the wire is looked at, so these hold for any
//! implementation of the ADS server.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BufMut};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use futures::StreamExt as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status, Streaming};

use crate::support::*;

const CDS: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
const LDS: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
const EDS: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const ADS_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const WAIT: Duration = Duration::from_secs(10);

async fn control_plane(net: u8) -> ControlPlane {
    ControlPlane::start(&[("sandbox.yaml", &sandbox(net))]).await
}

fn node(pod: &str) -> Node {
    Node {
        id: format!("sidecar~127.0.0.1~{pod}.testns1~testns1.svc.cluster.local"),
        cluster: "Kubernetes".into(),
        ..Default::default()
    }
}

fn request(node: Option<Node>, type_url: &str) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: type_url.into(),
        ..Default::default()
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to the ADS port")
}

/// An ADS stream: the requests' sender and the responses.
struct Stream {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

/// Opens a stream whose first request is `first`; the error when the server refuses at once.
async fn open(addr: SocketAddr, first: DiscoveryRequest) -> Result<Stream, Status> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel(addr).await)
        .max_decoding_message_size(256 * 1024 * 1024)
        .max_encoding_message_size(256 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.unwrap();
    let rx = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok(Stream { tx, rx })
}

impl Stream {
    /// The next response within `within`: `Ok(None)` when none came, `Err` when the stream
    /// ended with a status.
    async fn next(&mut self, within: Duration) -> Result<Option<DiscoveryResponse>, Status> {
        match tokio::time::timeout(within, self.rx.message()).await {
            Err(_) => Ok(None),
            Ok(Ok(Some(r))) => Ok(Some(r)),
            Ok(Ok(None)) => Err(Status::unknown(
                "the server closed the stream without a status",
            )),
            Ok(Err(status)) => Err(status),
        }
    }

    /// The next response of `type_url` (skipping any other), failing the test if none comes.
    async fn expect(&mut self, type_url: &str) -> DiscoveryResponse {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Ok(Some(r)) if r.type_url == type_url => return r,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no {type_url} response within {WAIT:?}"),
                Err(status) => panic!("stream ended while waiting for {type_url}: {status:?}"),
            }
        }
    }

    async fn send(&self, req: DiscoveryRequest) {
        self.tx.send(req).await.expect("stream open");
    }
}

/// The status a stream whose first request is `first` ends with.
async fn rejected(addr: SocketAddr, first: DiscoveryRequest) -> Status {
    let mut stream = match open(addr, first).await {
        Err(status) => return status,
        Ok(s) => s,
    };
    loop {
        match stream.next(WAIT).await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the server neither answered nor rejected within {WAIT:?}"),
            Err(status) => return status,
        }
    }
}

/// A well-behaved proxy still gets its clusters.
async fn another_proxy_is_served(cp: &ControlPlane) {
    let mut s = open(cp.grpc, request(Some(node("healthy")), CDS))
        .await
        .expect("a new stream is accepted");
    let r = s.expect(CDS).await;
    assert!(
        !r.resources.is_empty(),
        "a new proxy gets its clusters afterwards"
    );
}

/// The sum of a metric's series (every label set) on `/metrics`.
async fn metric(cp: &ControlPlane, name: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", cp.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let values: Vec<u64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!values.is_empty(), "{name} on /metrics:\n{text}");
    values.iter().sum()
}

#[tokio::test]
async fn a_first_request_without_node_or_with_a_garbage_node_id_is_invalid_argument() {
    let cp = control_plane(240).await;
    let status = rejected(cp.grpc, request(None, CDS)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("node"), "{status:?}");

    let garbage = Node {
        id: "definitely not a node id".into(),
        ..Default::default()
    };
    let status = rejected(cp.grpc, request(Some(garbage), CDS)).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("definitely not a node id"),
        "the message quotes the bad id: {status:?}"
    );
    another_proxy_is_served(&cp).await;
}

#[tokio::test]
async fn unknown_type_urls_leave_the_stream_serving() {
    let cp = control_plane(241).await;
    let mut s = open(
        cp.grpc,
        request(
            Some(node("sleep")),
            "type.googleapis.com/envoy.unknown.v3.Nothing",
        ),
    )
    .await
    .unwrap();
    s.send(request(None, "not a type url at all")).await;
    s.send(request(None, CDS)).await;
    let r = s.expect(CDS).await;
    assert!(!r.resources.is_empty());
    another_proxy_is_served(&cp).await;
}

#[tokio::test]
async fn a_request_for_100000_resource_names_is_answered() {
    let cp = control_plane(242).await;
    let mut s = open(cp.grpc, request(Some(node("sleep")), CDS))
        .await
        .unwrap();
    s.expect(CDS).await;
    let mut eds = request(None, EDS);
    eds.resource_names = (0..100_000)
        .map(|i| format!("outbound|{i}||nothing-{i}.testns1.svc.cluster.local"))
        .collect();
    eds.resource_names
        .push("outbound|8000||httpbin.testns1.svc.cluster.local".into());
    let started = std::time::Instant::now();
    s.send(eds).await;
    let r = s.expect(EDS).await;
    assert!(
        r.resources.len() <= 100_001,
        "at most what was asked for: {}",
        r.resources.len()
    );
    eprintln!("100,000 names answered in {:?}", started.elapsed());
    another_proxy_is_served(&cp).await;
}

#[tokio::test]
async fn garbage_nonces_are_ignored_and_are_not_counted_as_rejections() {
    let cp = control_plane(243).await;
    let mut s = open(cp.grpc, request(Some(node("sleep")), CDS))
        .await
        .unwrap();
    let first = s.expect(CDS).await;
    let rejects = metric(&cp, "pilot_total_xds_rejects").await;
    for nonce in ["garbage", "\u{1f4a9}", &"n".repeat(10_000)] {
        let mut ack = request(None, CDS);
        ack.response_nonce = nonce.to_string();
        ack.version_info = "bogus".into();
        s.send(ack.clone()).await;
        // The same garbage as a NACK.
        ack.error_detail = Some(envoy_types::pb::google::rpc::Status {
            code: 3,
            message: "rejected something that was never sent".into(),
            ..Default::default()
        });
        s.send(ack).await;
    }
    assert!(
        matches!(s.next(Duration::from_millis(500)).await, Ok(None)),
        "no push is triggered by garbage nonces"
    );
    assert_eq!(
        metric(&cp, "pilot_total_xds_rejects").await,
        rejects,
        "a NACK of a nonce that was never sent is no rejection"
    );
    // The real ACK is still accepted, and the stream still answers.
    let mut ack = request(None, CDS);
    ack.response_nonce = first.nonce.clone();
    ack.version_info = first.version_info.clone();
    s.send(ack).await;
    s.send(request(None, LDS)).await;
    s.expect(LDS).await;
    another_proxy_is_served(&cp).await;
}

/// A codec that sends and receives raw bytes as gRPC messages.
#[derive(Debug, Clone, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// The status the ADS method ends with when sent `message` as raw bytes.
async fn raw_status(addr: SocketAddr, message: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel(addr).await)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static(ADS_PATH);
    let outbound = futures::stream::iter([message]).chain(futures::stream::pending());
    let mut inbound = match grpc
        .streaming(tonic::Request::new(outbound), path, RawCodec)
        .await
    {
        Err(status) => return status,
        Ok(r) => r.into_inner(),
    };
    match tokio::time::timeout(WAIT, inbound.message()).await {
        Ok(Err(status)) => status,
        other => panic!("expected the stream to end with a status, got {other:?}"),
    }
}

#[tokio::test]
async fn bytes_that_are_not_protobuf_are_internal() {
    let cp = control_plane(244).await;
    let status = raw_status(cp.grpc, vec![0xff; 64]).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status.message().to_lowercase().contains("decode"),
        "the message says the request did not decode: {status:?}"
    );
    another_proxy_is_served(&cp).await;
}

#[tokio::test]
async fn a_70_mb_message_is_out_of_range() {
    let cp = control_plane(245).await;
    let status = raw_status(cp.grpc, vec![0u8; 70 * 1024 * 1024]).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("too large"),
        "the message says the request was too large: {status:?}"
    );
    another_proxy_is_served(&cp).await;
}

#[tokio::test]
async fn a_thousand_requests_on_one_stream_are_all_handled() {
    let cp = control_plane(246).await;
    let mut s = open(cp.grpc, request(Some(node("sleep")), CDS))
        .await
        .unwrap();
    let first = s.expect(CDS).await;
    let started = std::time::Instant::now();
    for _ in 0..1000 {
        let mut ack = request(None, CDS);
        ack.response_nonce = first.nonce.clone();
        ack.version_info = first.version_info.clone();
        s.send(ack).await;
    }
    // Handled in order: the request after the thousand is answered.
    s.send(request(None, LDS)).await;
    s.expect(LDS).await;
    eprintln!("1000 requests and an LDS answer in {:?}", started.elapsed());
    another_proxy_is_served(&cp).await;
}
