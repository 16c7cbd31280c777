//! `xds::server` and `xds::delta` through an in-process ADS client: the load test's simulated
//! proxy (it subscribes as Envoy does, ACKs everything and records when each type arrives)
//! against a `DiscoveryServer` served on a loopback port, with the snapshot pushed directly.
//! No Envoy, no files, no separate process.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::cli::loadtest::proxies::{ProxyRecord, node, run_proxy};
use crate::status::SyncStatusStore;
use crate::translate::testing::{SHOP, push_from_yaml};
use crate::xds::debounce::{PushRequest, TriggerReason};
use crate::xds::{DiscoveryServer, grpc};

/// `SHOP` served on a loopback port, and one simulated proxy (SotW or delta) that holds every
/// type.
async fn one_proxy(delta: bool) -> (Arc<DiscoveryServer>, Arc<ProxyRecord>) {
    let server = Arc::new(DiscoveryServer::new(
        push_from_yaml(SHOP, None),
        Arc::new(SyncStatusStore::default()),
        "navarch-test".into(),
    ));
    let listener = grpc::bind("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(grpc::serve(listener, server.clone()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let record = Arc::new(ProxyRecord::new("ns-0".into()));
    tokio::spawn(run_proxy(channel, node(0, 1), record.clone(), delta));
    let deadline = Instant::now() + Duration::from_secs(10);
    while record.initial_done.lock().expect("lock").is_none() {
        assert!(
            Instant::now() < deadline,
            "the proxy holds CDS, EDS, LDS and RDS within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (server, record)
}

/// Pushes `yaml`'s snapshot and returns the responses of each type the proxy received for it
/// (after the first one arrived, a quiet 300 ms to catch any other).
async fn push_and_count(
    server: &DiscoveryServer,
    record: &ProxyRecord,
    yaml: &str,
    full: bool,
) -> BTreeMap<&'static str, usize> {
    let start = Instant::now();
    let req = if full {
        PushRequest::full(TriggerReason::ConfigUpdate)
    } else {
        PushRequest::endpoints_only()
    };
    server.push(push_from_yaml(yaml, None), req);
    let deadline = start + Duration::from_secs(10);
    while record.responses_since(start).values().sum::<usize>() == 0 {
        assert!(
            Instant::now() < deadline,
            "a response within 10 s of the push"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    record
        .responses_since(start)
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn weights_changed() -> String {
    SHOP.replace("weight: 90", "weight: 80")
        .replace("weight: 10", "weight: 20")
}

fn pod_moved() -> String {
    SHOP.replace("podIP: 10.0.0.1", "podIP: 10.0.0.7")
}

/// A VirtualService change sends routes only, an endpoint change endpoints only; over SotW
/// and delta alike.
#[tokio::test]
async fn a_change_sends_only_the_type_it_changes() {
    for delta in [false, true] {
        for (yaml, full, sent) in [
            (weights_changed(), true, "RDS"),
            (pod_moved(), false, "EDS"),
        ] {
            let (server, record) = one_proxy(delta).await;
            let got = push_and_count(&server, &record, &yaml, full).await;
            assert_eq!(got, BTreeMap::from([(sent, 1)]), "delta: {delta}");
        }
    }
}

#[tokio::test]
async fn sotw_an_unchanged_snapshot_sends_nothing() {
    let (server, record) = one_proxy(false).await;
    let start = Instant::now();
    server.push(
        push_from_yaml(SHOP, None),
        PushRequest::full(TriggerReason::ConfigUpdate),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(record.responses_since(start).values().sum::<usize>(), 0);
}

#[tokio::test]
async fn syncz_lists_the_proxy_with_every_type_acked() {
    let (server, _record) = one_proxy(false).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let rows = server.status.syncz(None);
        assert_eq!(rows.len(), 1, "one connected proxy");
        let r = &rows[0];
        let pairs = [
            (&r.cluster_sent, &r.cluster_acked),
            (&r.listener_sent, &r.listener_acked),
            (&r.route_sent, &r.route_acked),
            (&r.endpoint_sent, &r.endpoint_acked),
        ];
        if pairs
            .iter()
            .all(|(sent, acked)| !sent.is_empty() && sent == acked)
        {
            assert_eq!(r.proxy, "client-0.ns-0");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every type ACKed within 5 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
