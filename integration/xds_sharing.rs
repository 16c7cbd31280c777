//! The ADS server's memory design, seen from outside over real gRPC streams: proxies of one
//! scope share one encoding (counted on the server) and get the same bytes; a proxy that
//! stops reading holds at most one waiting response per type and is cut after the send
//! timeout while the others keep converging; an endpoint-only change encodes and pushes the
//! changed clusters only.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use navarch::translate::extract::{eds_cluster_names, rds_route_names};
use navarch::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

fn node(ip: &str, pod: &str, ns: &str) -> Node {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s(ns));
    md.fields.insert("INTERCEPTION_MODE".into(), s("REDIRECT"));
    md.fields.insert("INSTANCE_IPS".into(), s(ip));
    Node {
        id: format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local"),
        metadata: Some(md),
        ..Default::default()
    }
}

fn request(node: Option<Node>, type_url: &str, names: &BTreeSet<String>) -> DiscoveryRequest {
    DiscoveryRequest {
        node,
        type_url: type_url.into(),
        resource_names: names.iter().cloned().collect(),
        ..Default::default()
    }
}

/// A simulated sidecar: asks CDS and LDS, then EDS and RDS for what they name, ACKs every
/// response as Envoy does, and keeps every response it received.
struct Sidecar {
    responses: Arc<Mutex<Vec<DiscoveryResponse>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl Sidecar {
    async fn connect(cp: &ControlPlane, node: Node) -> Sidecar {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.grpc))
            .await
            .unwrap()
            .max_decoding_message_size(64 * 1024 * 1024);
        let (tx, rx) = mpsc::channel(16);
        tx.send(request(Some(node), CLUSTER_TYPE, &BTreeSet::new()))
            .await
            .unwrap();
        tx.send(request(None, LISTENER_TYPE, &BTreeSet::new()))
            .await
            .unwrap();
        let mut inbound = client
            .stream_aggregated_resources(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let responses: Arc<Mutex<Vec<DiscoveryResponse>>> = Arc::default();
        let seen = responses.clone();
        let task = tokio::spawn(async move {
            let mut eds = BTreeSet::new();
            let mut rds = BTreeSet::new();
            while let Ok(Some(resp)) = inbound.message().await {
                let (dependent, wanted, held) = match resp.type_url.as_str() {
                    CLUSTER_TYPE => (ENDPOINT_TYPE, eds_cluster_names(&resp.resources), &mut eds),
                    LISTENER_TYPE => (ROUTE_TYPE, rds_route_names(&resp.resources), &mut rds),
                    _ => (
                        "",
                        BTreeSet::new(),
                        if resp.type_url == ENDPOINT_TYPE {
                            &mut eds
                        } else {
                            &mut rds
                        },
                    ),
                };
                let ack_names = if dependent.is_empty() {
                    held.clone()
                } else {
                    BTreeSet::new()
                };
                let ack = DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    version_info: resp.version_info.clone(),
                    response_nonce: resp.nonce.clone(),
                    resource_names: ack_names.into_iter().collect(),
                    ..Default::default()
                };
                seen.lock().unwrap().push(resp);
                if tx.send(ack).await.is_err() {
                    return;
                }
                if !dependent.is_empty() && *held != wanted {
                    *held = wanted.clone();
                    if tx.send(request(None, dependent, &wanted)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Sidecar {
            responses,
            _task: task,
        }
    }

    fn of_type(&self, type_url: &str) -> Vec<DiscoveryResponse> {
        self.responses
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.type_url == type_url)
            .cloned()
            .collect()
    }

    fn has_all_types(&self) -> bool {
        [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE]
            .iter()
            .all(|t| !self.of_type(t).is_empty())
    }
}

async fn push_status(cp: &ControlPlane) -> serde_json::Value {
    reqwest::get(format!("{}/debug/push_status", cp.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn adsz(cp: &ControlPlane) -> serde_json::Value {
    reqwest::get(format!("{}/debug/adsz", cp.http))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn all_synced(sidecars: &[Sidecar]) -> bool {
    let synced = eventually(Duration::from_secs(20), || async {
        sidecars.iter().all(Sidecar::has_all_types)
    })
    .await;
    synced.is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_of_one_scope_share_one_encoding_and_get_the_same_bytes() {
    let net = 230;
    let cp = ControlPlane::start(&[("sandbox.yaml", &sandbox(net)), ("vs.yaml", VS_90_10)]).await;
    let mut sidecars = Vec::new();
    for i in 0..20 {
        let ip = format!("127.{net}.1.{}", i + 1);
        sidecars.push(Sidecar::connect(&cp, node(&ip, &format!("client-{i}"), "testns1")).await);
    }
    assert!(
        all_synced(&sidecars).await,
        "20 proxies got CDS, EDS, LDS and RDS"
    );
    let status = push_status(&cp).await;
    assert_eq!(
        status["encodings"], 4,
        "one encoding per type for 20 proxies of one scope: {status}"
    );
    // The same bytes for all (versions and resources); the nonce names the version.
    for t in [CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE] {
        let first = sidecars[0].of_type(t)[0].clone();
        assert!(!first.resources.is_empty(), "{t} has resources");
        for s in &sidecars {
            let r = &s.of_type(t)[0];
            assert_eq!(r.version_info, first.version_info, "{t}");
            assert_eq!(r.resources, first.resources, "{t}");
            assert_eq!(r.control_plane, first.control_plane, "{t}");
            assert!(r.nonce.starts_with(&r.version_info), "{t}: {}", r.nonce);
        }
    }
    // A proxy of another namespace is another scope: four more encodings.
    let other = Sidecar::connect(&cp, node(&format!("127.{net}.2.1"), "x", "default")).await;
    assert!(all_synced(std::slice::from_ref(&other)).await);
    assert_eq!(push_status(&cp).await["encodings"], 8);
}

/// Services enough that a cluster response does not fit the stalled stream's window.
fn many_services(net: u8, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: testns1}}\nspec:\n  selector: {{app: svc-{i}}}\n  ports: [{{name: http, port: 9000, targetPort: 8080}}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: svc-{i}, namespace: testns1, labels: {{app: svc-{i}}}}}\nstatus: {{phase: Running, podIP: 127.{net}.{}.{}}}\n---\n",
                3 + i / 250,
                1 + i % 250
            )
        })
        .collect()
}

fn destination_rule(generation: usize) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: httpbin, namespace: testns1}}\nspec:\n  host: httpbin\n  trafficPolicy:\n    connectionPool:\n      tcp: {{maxConnections: {}}}\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n  - {{name: v2, labels: {{version: v2}}}}\n",
        100 + generation
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_proxy_holds_one_response_per_type_and_is_cut_after_the_send_timeout() {
    let net = 231;
    let limits = navarch::xds::grpc::AdsLimits {
        send_timeout: Duration::from_secs(4),
        ..Default::default()
    };
    let cp = ControlPlane::start_with_limits(
        &[
            ("sandbox.yaml", &sandbox(net)),
            ("many.yaml", &many_services(net, 400)),
            ("dr.yaml", &destination_rule(0)),
        ],
        limits,
    )
    .await;
    // A client whose stream window is 1 KiB and that never reads: the server can send it
    // almost nothing.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cp.grpc))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut stalled_client = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(4);
    tx.send(request(
        Some(node(&format!("127.{net}.1.1"), "stalled", "testns1")),
        CLUSTER_TYPE,
        &BTreeSet::new(),
    ))
    .await
    .unwrap();
    let stalled_stream = stalled_client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let healthy =
        Sidecar::connect(&cp, node(&format!("127.{net}.1.2"), "healthy", "testns1")).await;
    assert!(all_synced(std::slice::from_ref(&healthy)).await);
    let pending = || async {
        adsz(&cp).await["clients"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["proxy"] == "stalled.testns1")
            .map(|c| c["pendingResponses"].as_u64().unwrap())
    };
    assert_eq!(
        pending().await,
        Some(1),
        "its first CDS response is not sent"
    );

    // Cluster changes keep coming; the healthy proxy gets every one, the stalled one holds
    // the response being sent and one waiting (the newest replaces the one it never took).
    for generation in 1..=3 {
        let before = healthy.of_type(CLUSTER_TYPE).len();
        cp.write("dr.yaml", &destination_rule(generation));
        let got = eventually(Duration::from_secs(5), || async {
            healthy.of_type(CLUSTER_TYPE).len() > before
        })
        .await;
        assert!(
            got.is_some(),
            "change {generation} reached the healthy proxy"
        );
        assert_eq!(pending().await, Some(2), "one being sent, one waiting");
    }
    let cut = eventually(Duration::from_secs(10), || async {
        pending().await.is_none()
    })
    .await;
    assert!(
        cut.is_some(),
        "the stalled stream is closed after the send timeout"
    );
    assert_eq!(push_status(&cp).await["stalledStreams"], 1);
    // When it finally reads, the stream ends with DEADLINE_EXCEEDED and the reason.
    let mut stalled_stream = stalled_stream;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stalled_stream.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the stream ends");
    let status = ended.expect("an error status");
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(
        status.message().contains("--xds-send-timeout"),
        "{status:?}"
    );
    // The healthy proxy is still served.
    let before = healthy.of_type(CLUSTER_TYPE).len();
    cp.write("dr.yaml", &destination_rule(9));
    let got = eventually(Duration::from_secs(5), || async {
        healthy.of_type(CLUSTER_TYPE).len() > before
    })
    .await;
    assert!(got.is_some());
}

fn load_assignments(r: &DiscoveryResponse) -> Vec<ClusterLoadAssignment> {
    r.resources
        .iter()
        .map(|a| ClusterLoadAssignment::decode(a.value.as_slice()).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_encodes_and_pushes_only_the_changed_clusters() {
    let net = 232;
    let cp = ControlPlane::start(&[
        ("sandbox.yaml", &sandbox(net)),
        ("many.yaml", &many_services(net, 20)),
    ])
    .await;
    let mut sidecars = Vec::new();
    for i in 0..3 {
        let ip = format!("127.{net}.1.{}", i + 1);
        sidecars.push(Sidecar::connect(&cp, node(&ip, &format!("client-{i}"), "testns1")).await);
    }
    assert!(all_synced(&sidecars).await);
    let full_eds = load_assignments(&sidecars[0].of_type(ENDPOINT_TYPE)[0]);
    assert!(
        full_eds.len() > 20,
        "the first EDS response names every cluster"
    );
    let before = push_status(&cp).await;
    let eds_before: Vec<usize> = sidecars
        .iter()
        .map(|s| s.of_type(ENDPOINT_TYPE).len())
        .collect();

    // svc-7's pod moves: only its endpoints change.
    let moved = many_services(net, 20).replace(
        &format!("podIP: 127.{net}.3.8}}"),
        &format!("podIP: 127.{net}.9.8}}"),
    );
    assert_ne!(moved, many_services(net, 20));
    cp.write("many.yaml", &moved);
    let pushed = eventually(Duration::from_secs(5), || async {
        sidecars
            .iter()
            .zip(&eds_before)
            .all(|(s, n)| s.of_type(ENDPOINT_TYPE).len() > *n)
    })
    .await;
    assert!(pushed.is_some(), "every proxy got an EDS update");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let host = "svc-7.testns1.svc.cluster.local";
    for s in &sidecars {
        let update = s.of_type(ENDPOINT_TYPE).last().cloned().unwrap();
        let clas = load_assignments(&update);
        let names: Vec<&str> = clas.iter().map(|c| c.cluster_name.as_str()).collect();
        assert_eq!(
            names,
            [format!("outbound|9000||{host}")],
            "only svc-7's cluster"
        );
        let ip = clas[0].endpoints[0].lb_endpoints[0].clone();
        assert!(
            format!("{ip:?}").contains(&format!("127.{net}.9.8")),
            "{ip:?}"
        );
        assert_eq!(s.of_type(CLUSTER_TYPE).len(), 1, "no CDS push");
        assert_eq!(s.of_type(LISTENER_TYPE).len(), 1, "no LDS push");
    }
    let after = push_status(&cp).await;
    assert_eq!(after["fullPushes"], before["fullPushes"], "not a full push");
    let encoded =
        after["encodedResources"].as_u64().unwrap() - before["encodedResources"].as_u64().unwrap();
    assert_eq!(
        encoded,
        1,
        "one cluster's endpoints encoded again, not {}",
        full_eds.len()
    );
    // A proxy connecting now gets the whole set at the version the others hold.
    let late = Sidecar::connect(&cp, node(&format!("127.{net}.1.9"), "late", "testns1")).await;
    assert!(all_synced(std::slice::from_ref(&late)).await);
    let late_eds = late.of_type(ENDPOINT_TYPE)[0].clone();
    assert_eq!(load_assignments(&late_eds).len(), full_eds.len());
    assert_eq!(
        late_eds.version_info,
        sidecars[0]
            .of_type(ENDPOINT_TYPE)
            .last()
            .unwrap()
            .version_info
    );
}
