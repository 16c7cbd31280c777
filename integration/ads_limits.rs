//! The ADS port's limits, from outside: streams per peer address (RESOURCE_EXHAUSTED past
//! the limit, other peers unaffected, a closed stream gives its place back) and the request
//! rate of one stream (a client that sends without pause is read at the configured rate while
//! the server keeps serving everyone else).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use navarch::translate::CLUSTER_TYPE;
use navarch::xds::grpc::AdsLimits;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::support::*;

fn node(ip: &str, pod: &str) -> Node {
    Node {
        id: format!("sidecar~{ip}~{pod}.testns1~testns1.svc.cluster.local"),
        ..Default::default()
    }
}

/// Opens a stream from `local` (a loopback address) and sends `first`.
async fn open(
    cp: &ControlPlane,
    local: &str,
    first: DiscoveryRequest,
) -> (
    mpsc::Sender<DiscoveryRequest>,
    Result<Streaming<DiscoveryResponse>, tonic::Status>,
) {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc))
        .unwrap()
        .local_address(Some(local.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(1024);
    tx.send(first).await.unwrap();
    let stream = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, stream)
}

fn cds(node: Option<Node>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: CLUSTER_TYPE.into(),
        ..Default::default()
    }
}

/// The first message of a stream, or its error status.
async fn first_message(
    stream: Result<Streaming<DiscoveryResponse>, tonic::Status>,
) -> Result<(Streaming<DiscoveryResponse>, DiscoveryResponse), tonic::Status> {
    let mut stream = stream?;
    let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("an answer within 10s")?
        .expect("a response");
    Ok((stream, msg))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_per_peer_are_limited_and_other_peers_are_not_affected() {
    let net = 233;
    let limits = AdsLimits {
        max_streams_per_peer: 3,
        ..Default::default()
    };
    let cp = ControlPlane::start_with_limits(&[("sandbox.yaml", &sandbox(net))], limits).await;
    let peer = format!("127.{net}.0.50");
    let mut held = Vec::new();
    for i in 0..3 {
        let (tx, stream) = open(&cp, &peer, cds(Some(node(&peer, &format!("p{i}"))))).await;
        let (stream, msg) = first_message(stream).await.expect("within the limit");
        assert_eq!(msg.type_url, CLUSTER_TYPE);
        held.push((tx, stream));
    }
    let (_tx, stream) = open(&cp, &peer, cds(Some(node(&peer, "p3")))).await;
    let refused = first_message(stream).await.expect_err("a fourth stream");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(&peer)
            && refused.message().contains("--xds-max-streams-per-peer"),
        "{refused:?}"
    );
    // Another address is its own peer.
    let other = format!("127.{net}.0.51");
    let (_tx2, stream) = open(&cp, &other, cds(Some(node(&other, "q")))).await;
    first_message(stream).await.expect("another peer is served");
    // A closed stream gives its place back.
    drop(held.pop());
    let again = eventually(Duration::from_secs(5), || async {
        let (_tx, stream) = open(&cp, &peer, cds(Some(node(&peer, "p4")))).await;
        first_message(stream).await.is_ok()
    })
    .await;
    assert!(
        again.is_some(),
        "a place freed by a closed stream is taken again"
    );
    let status: serde_json::Value = reqwest::get(format!("{}/debug/push_status", cp.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["refusedStreams"].as_u64().unwrap() >= 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_pauses_is_read_at_the_request_rate() {
    let net = 234;
    let limits = AdsLimits {
        requests_per_second: 100.0,
        request_burst: 50.0,
        ..Default::default()
    };
    let cp = ControlPlane::start_with_limits(&[("sandbox.yaml", &sandbox(net))], limits).await;
    let peer = format!("127.{net}.0.50");
    let (tx, stream) = open(&cp, &peer, cds(Some(node(&peer, "flood")))).await;
    let (_stream, first) = first_message(stream).await.unwrap();
    let acks = || async {
        let text = reqwest::get(format!("{}/metrics", cp.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("navarch_xds_acks "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    // 200 ACKs of that response, sent without pause.
    let total = 200;
    let start = Instant::now();
    let ack = DiscoveryRequest {
        type_url: CLUSTER_TYPE.into(),
        version_info: first.version_info.clone(),
        response_nonce: first.nonce.clone(),
        ..Default::default()
    };
    let sender = tokio::spawn(async move {
        for _ in 0..total {
            if tx.send(ack.clone()).await.is_err() {
                return None;
            }
        }
        Some(tx)
    });
    // Meanwhile another proxy is served at once.
    let other = format!("127.{net}.0.51");
    let (_tx2, other_stream) = open(&cp, &other, cds(Some(node(&other, "calm")))).await;
    let t = Instant::now();
    first_message(other_stream)
        .await
        .expect("the other proxy is served");
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "served in {:?}",
        t.elapsed()
    );
    let all_read = eventually(Duration::from_secs(20), || async { acks().await >= total }).await;
    assert!(all_read.is_some(), "every request is read eventually");
    let took = start.elapsed();
    // The first (the initial request) and 49 more at once, then 100/s: the other 151 take
    // about 1.5 s.
    assert!(
        took >= Duration::from_millis(1300),
        "{total} requests read in {took:?}: not rate-limited"
    );
    drop(sender);
}
