//! Faults with real parts and traffic running: the control plane killed and restarted (no
//! request fails, the proxy reconnects and is re-synced, and because versions are content
//! hashes it rebuilds nothing), and a proxy that rejects every push of one type (its other
//! types and every other proxy keep converging; the rejection is on syncz and /metrics).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use navarch::translate::extract::rds_route_names;
use navarch::translate::{CLUSTER_TYPE, LISTENER_TYPE, ROUTE_TYPE};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::support::*;

/// `navarch discovery` as a separate process on fixed ports of `ip`.
struct Discovery {
    child: tokio::process::Child,
    http: String,
}

impl Discovery {
    async fn start(config: &std::path::Path, ip: &str, log: &std::path::Path) -> Discovery {
        let out = std::fs::File::create(log).unwrap();
        let child = tokio::process::Command::new(navarch_bin())
            .args(["discovery", "--config-dir"])
            .arg(config)
            .args(["--grpc-addr", &format!("{ip}:15010")])
            .args(["--http-addr", &format!("{ip}:8080")])
            .args(["--monitoring-addr", &format!("{ip}:15014")])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("start navarch discovery");
        let http = format!("http://{ip}:8080");
        let ready = eventually(Duration::from_secs(20), || {
            let url = format!("{http}/ready");
            async move { reqwest::get(url).await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(
            ready.is_some(),
            "navarch discovery ready; see {}",
            log.display()
        );
        Discovery { child, http }
    }

    fn kill(&mut self) {
        // SIGKILL: no goodbye to the proxies.
        self.child.start_kill().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_control_plane_loses_no_request_and_rebuilds_nothing() {
    let net = 235;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("sandbox.yaml"), sandbox(net)).unwrap();
    std::fs::write(config.join("vs.yaml"), VS_90_10).unwrap();
    let cp_ip = format!("127.{net}.0.1");
    let mut discovery = Discovery::start(&config, &cp_ip, &dir.path().join("first.log")).await;
    let _v1 = Upstream::start("v1", &format!("127.{net}.0.11:8080")).await;
    let _v2 = Upstream::start("v2", &format!("127.{net}.0.12:8080")).await;
    let ip = format!("127.{net}.0.21");
    let envoy = start_proxy(
        dir.path(),
        &format!("{cp_ip}:15010"),
        &ProxyNode {
            node_type: "sidecar",
            ip: &ip,
            pod: "sleep",
            namespace: "testns1",
            labels: "app=sleep",
            mode: "NONE",
        },
        &[],
        &[],
    )
    .await;
    let listener = format!("{ip}:8000");
    let warm = eventually(Duration::from_secs(10), || async {
        send(&client(), "GET", &listener, HOST, "/headers", &[])
            .await
            .status
            == 200
    })
    .await;
    assert!(warm.is_some(), "traffic flows before the fault");
    let lds_before = envoy
        .stat("listener_manager.lds.version_text")
        .await
        .unwrap();
    let cds_before = envoy
        .stat("cluster_manager.cds.version_text")
        .await
        .unwrap();
    let modified = |name: &'static str| {
        let envoy = &envoy;
        async move { envoy.counter(name).await.unwrap_or(0) }
    };
    let listeners_modified = modified("listener_manager.listener_modified").await;
    let clusters_modified = modified("cluster_manager.cluster_modified").await;

    // Requests without pause while the control plane dies and comes back.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let traffic = {
        let (stop, ok, failed, listener) =
            (stop.clone(), ok.clone(), failed.clone(), listener.clone());
        tokio::spawn(async move {
            let c = client();
            while !stop.load(Ordering::Relaxed) {
                let r = send(&c, "GET", &listener, HOST, "/headers", &[]).await;
                if r.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    discovery.kill();
    let _ = discovery.child.wait().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarted = Discovery::start(&config, &cp_ip, &dir.path().join("second.log")).await;
    // The proxy reconnects (Envoy retries ADS with backoff) and is synced again.
    let synced = eventually(Duration::from_secs(30), || async {
        let syncz: Vec<navarch::proto::SyncStatus> =
            reqwest::get(format!("{}/debug/syncz", restarted.http))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        syncz.iter().any(|s| {
            s.proxy == "sleep.testns1"
                && !s.listener_sent.is_empty()
                && s.listener_sent == s.listener_acked
                && s.cluster_sent == s.cluster_acked
                && s.route_sent == s.route_acked
                && s.endpoint_sent == s.endpoint_acked
        })
    })
    .await;
    assert!(
        synced.is_some(),
        "the proxy is re-synced by the restarted control plane"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    traffic.await.unwrap();
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100, "{ok} requests went through");
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed across the restart",
        ok + failed
    );
    // Same content, same versions: nothing was rebuilt.
    assert_eq!(
        envoy
            .stat("listener_manager.lds.version_text")
            .await
            .unwrap(),
        lds_before
    );
    assert_eq!(
        envoy
            .stat("cluster_manager.cds.version_text")
            .await
            .unwrap(),
        cds_before
    );
    assert_eq!(
        modified("listener_manager.listener_modified").await,
        listeners_modified
    );
    assert_eq!(
        modified("cluster_manager.cluster_modified").await,
        clusters_modified
    );
}

fn node(ip: &str, pod: &str) -> Node {
    Node {
        id: format!("sidecar~{ip}~{pod}.testns1~testns1.svc.cluster.local"),
        ..Default::default()
    }
}

/// A simulated proxy that answers every response of `reject` with a NACK and ACKs the rest;
/// returns the responses it got.
async fn proxy(
    cp: &ControlPlane,
    node: Node,
    reject: Option<&'static str>,
) -> Arc<std::sync::Mutex<Vec<DiscoveryResponse>>> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{}", cp.grpc))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    for (i, t) in [CLUSTER_TYPE, LISTENER_TYPE].into_iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: t.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut inbound = client
        .stream_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let seen: Arc<std::sync::Mutex<Vec<DiscoveryResponse>>> = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let mut routes = BTreeSet::new();
        let mut acked: std::collections::BTreeMap<String, String> = Default::default();
        while let Ok(Some(resp)) = inbound.message().await {
            let nack = reject == Some(resp.type_url.as_str());
            let names = if resp.type_url == ROUTE_TYPE {
                routes.iter().cloned().collect()
            } else {
                Vec::new()
            };
            let reply = DiscoveryRequest {
                type_url: resp.type_url.clone(),
                // A NACK names the last version accepted, as Envoy does.
                version_info: if nack {
                    acked.get(&resp.type_url).cloned().unwrap_or_default()
                } else {
                    resp.version_info.clone()
                },
                response_nonce: resp.nonce.clone(),
                resource_names: names,
                error_detail: nack.then(|| RpcStatus {
                    code: 3,
                    message: format!("rejected by the test: {}", resp.version_info),
                    ..Default::default()
                }),
                ..Default::default()
            };
            if !nack {
                acked.insert(resp.type_url.clone(), resp.version_info.clone());
            }
            let want_routes =
                (resp.type_url == LISTENER_TYPE).then(|| rds_route_names(&resp.resources));
            seen.lock().unwrap().push(resp);
            if tx.send(reply).await.is_err() {
                return;
            }
            if let Some(wanted) = want_routes
                && wanted != routes
            {
                routes = wanted;
                let req = DiscoveryRequest {
                    type_url: ROUTE_TYPE.into(),
                    resource_names: routes.iter().cloned().collect(),
                    ..Default::default()
                };
                if tx.send(req).await.is_err() {
                    return;
                }
            }
        }
    });
    out
}

fn count(seen: &std::sync::Mutex<Vec<DiscoveryResponse>>, type_url: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|r| r.type_url == type_url)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_rejects_one_type_keeps_the_rest_converging_and_is_reported() {
    let net = 236;
    let cp = ControlPlane::start(&[("sandbox.yaml", &sandbox(net)), ("vs.yaml", VS_90_10)]).await;
    let nacker = proxy(
        &cp,
        node(&format!("127.{net}.0.21"), "nacker"),
        Some(ROUTE_TYPE),
    )
    .await;
    let good = proxy(&cp, node(&format!("127.{net}.0.22"), "good"), None).await;
    let synced = eventually(Duration::from_secs(10), || async {
        [&nacker, &good]
            .iter()
            .all(|s| count(s, ROUTE_TYPE) > 0 && count(s, CLUSTER_TYPE) > 0)
    })
    .await;
    assert!(synced.is_some());
    // A route change (which the nacker rejects) and a cluster change (which it accepts).
    cp.write("vs.yaml", VS_ALL_V2);
    let dr = sandbox(net).replace(
        "name: v1\n",
        "name: v1\n    trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}\n",
    );
    assert_ne!(dr, sandbox(net), "the DestinationRule gets a policy");
    let cds_before = (count(&nacker, CLUSTER_TYPE), count(&good, CLUSTER_TYPE));
    cp.write("sandbox.yaml", &dr);
    let converged = eventually(Duration::from_secs(10), || async {
        let syncz = cp.syncz().await;
        let entry = |p: &str| syncz.iter().find(|s| s.proxy == p).cloned();
        let (Some(n), Some(g)) = (entry("nacker.testns1"), entry("good.testns1")) else {
            return false;
        };
        count(&nacker, CLUSTER_TYPE) > cds_before.0
            && count(&good, CLUSTER_TYPE) > cds_before.1
            && n.cluster_sent == n.cluster_acked
            && n.listener_sent == n.listener_acked
            && g.route_sent == g.route_acked
            && g.cluster_sent == g.cluster_acked
            && !n.resources[ROUTE_TYPE].last_error.is_empty()
    })
    .await;
    assert!(
        converged.is_some(),
        "the nacker's clusters and listeners, and every type of the other proxy, converge: {:?}",
        cp.syncz().await
    );
    let syncz = cp.syncz().await;
    let n = syncz.iter().find(|s| s.proxy == "nacker.testns1").unwrap();
    assert!(
        n.resources[ROUTE_TYPE]
            .last_error
            .contains("rejected by the test"),
        "{n:?}"
    );
    assert_ne!(
        n.route_sent, n.route_acked,
        "its routes stay at the last accepted version"
    );
    let metrics = reqwest::get(format!("{}/metrics", cp.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rds_rejects: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pilot_xds_rds_reject "))
        .unwrap_or_else(|| panic!("pilot_xds_rds_reject in /metrics:\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(rds_rejects >= 1, "{metrics}");
    let cds_rejects = metrics
        .lines()
        .find_map(|l| l.strip_prefix("pilot_xds_cds_reject "))
        .map(str::trim);
    assert_eq!(cds_rejects, Some("0"), "no cluster was rejected");
}
