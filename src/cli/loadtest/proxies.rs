//! The simulated sidecars: real ADS clients (State of the World or Delta) that request CDS,
//! EDS, LDS and RDS like Envoy, ACK every response, record when each arrives, and reconnect
//! with Envoy's jittered exponential backoff when the server ends or refuses a stream (istiod
//! turns away streams beyond its admission rate).
//!
//! Owns the per-proxy records and the convergence arithmetic over them. Must not know which
//! control plane it talks to: everything it reports is measured on the client side.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
    aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
};
use envoy_types::pb::google::protobuf::{Any, Struct, Value, value::Kind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::translate::extract::{eds_cluster_names, rds_route_names};
use crate::translate::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE};

/// Envoy's retry of a failed ADS stream: a random delay below base × 2^attempt, capped.
const RETRY_BASE: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Per simulated proxy: its namespace and when responses of each type arrived.
pub struct ProxyRecord {
    pub namespace: String,
    pub initial_done: Mutex<Option<Instant>>,
    arrivals: Mutex<BTreeMap<&'static str, Vec<Instant>>>,
    /// Streams that ended (refused, reset or closed) and were retried.
    pub reconnects: AtomicUsize,
    /// Bytes of resources received (the `Any` values), all types.
    pub resource_bytes: AtomicU64,
}

impl ProxyRecord {
    pub fn new(namespace: String) -> ProxyRecord {
        ProxyRecord {
            namespace,
            initial_done: Mutex::new(None),
            arrivals: Mutex::new(BTreeMap::new()),
            reconnects: AtomicUsize::new(0),
            resource_bytes: AtomicU64::new(0),
        }
    }

    fn arrived(&self, kind: &'static str, at: Instant, bytes: u64) {
        self.resource_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut a = self.arrivals.lock().expect("arrivals lock");
        a.entry(kind).or_default().push(at);
        if a.len() >= 4 {
            let mut done = self.initial_done.lock().expect("initial lock");
            done.get_or_insert(at);
        }
    }

    /// The first arrival of `kind` at or after `t`.
    pub fn first_after(&self, kind: &str, t: Instant) -> Option<Instant> {
        let a = self.arrivals.lock().expect("arrivals lock");
        a.get(kind)?.iter().copied().find(|x| *x >= t)
    }

    /// Responses of each type that arrived at or after `t`.
    pub fn responses_since(&self, t: Instant) -> BTreeMap<&'static str, usize> {
        let a = self.arrivals.lock().expect("arrivals lock");
        a.iter()
            .map(|(k, v)| (*k, v.iter().filter(|x| **x >= t).count()))
            .collect()
    }
}

/// Responses per type over `records` since `t`.
pub fn responses_since(records: &[Arc<ProxyRecord>], t: Instant) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for r in records {
        for (k, n) in r.responses_since(t) {
            *out.entry(k).or_default() += n;
        }
    }
    out
}

fn short(type_url: &str) -> &'static str {
    match type_url {
        CLUSTER_TYPE => "CDS",
        ENDPOINT_TYPE => "EDS",
        LISTENER_TYPE => "LDS",
        ROUTE_TYPE => "RDS",
        _ => "other",
    }
}

/// The node of simulated proxy `k`: a sidecar in `ns-<k mod namespaces>` at a 10.200.x.y
/// address (configuration only), with Istio's metadata keys.
pub fn node(k: usize, namespaces: usize) -> Node {
    let ns = format!("ns-{}", k % namespaces);
    let ip = format!("10.200.{}.{}", (k / 250) % 250, k % 250 + 1);
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.to_string())),
    };
    let mut labels = Struct::default();
    labels.fields.insert("app".into(), s("client"));
    let mut md = Struct::default();
    md.fields.insert("NAMESPACE".into(), s(&ns));
    md.fields.insert("INTERCEPTION_MODE".into(), s("REDIRECT"));
    md.fields
        .insert("ISTIO_VERSION".into(), s(crate::bootstrap::ISTIO_VERSION));
    md.fields.insert("INSTANCE_IPS".into(), s(&ip));
    md.fields.insert("CLUSTER_ID".into(), s("Kubernetes"));
    md.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(labels)),
        },
    );
    Node {
        id: format!("sidecar~{ip}~client-{k}.{ns}~{ns}.svc.cluster.local"),
        cluster: "Kubernetes".into(),
        metadata: Some(md),
        ..Default::default()
    }
}

fn bytes_of<'a>(resources: impl Iterator<Item = &'a Any>) -> u64 {
    resources.map(|a| a.value.len() as u64).sum()
}

/// What [`Responses`] records of a SotW or delta response.
trait Response {
    fn type_url(&self) -> &str;
    /// Bytes of the resources it carries (the `Any` values).
    fn resource_bytes(&self) -> u64;
}

impl Response for DiscoveryResponse {
    fn type_url(&self) -> &str {
        &self.type_url
    }

    fn resource_bytes(&self) -> u64 {
        bytes_of(self.resources.iter())
    }
}

impl Response for DeltaDiscoveryResponse {
    fn type_url(&self) -> &str {
        &self.type_url
    }

    fn resource_bytes(&self) -> u64 {
        bytes_of(self.resources.iter().filter_map(|r| r.resource.as_ref()))
    }
}

/// The responses of one stream, each recorded in the proxy's record as it
/// arrives.
struct Responses<'a, T> {
    inbound: tonic::Streaming<T>,
    record: &'a ProxyRecord,
    /// A response arrived: the server admitted the stream.
    admitted: bool,
}

impl<'a, T: Response> Responses<'a, T> {
    /// The stream the server answered with, or why it did not.
    fn open(
        opened: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>,
        record: &'a ProxyRecord,
    ) -> Result<Self, String> {
        match opened {
            Ok(r) => Ok(Responses {
                inbound: r.into_inner(),
                record,
                admitted: false,
            }),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The next response, recorded; or why the stream ended.
    async fn next(&mut self) -> Result<T, String> {
        let resp = match self.inbound.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) => return Err("stream closed".to_string()),
            Err(e) => return Err(e.to_string()),
        };
        self.admitted = true;
        self.record.arrived(
            short(resp.type_url()),
            Instant::now(),
            resp.resource_bytes(),
        );
        Ok(resp)
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

type Client = AggregatedDiscoveryServiceClient<tonic::transport::Channel>;

/// One State-of-the-World stream: CDS then LDS, EDS/RDS by name, every response ACKed.
/// Returns whether any response arrived (the stream was admitted).
async fn sotw_stream(client: &mut Client, node: &Node, record: &ProxyRecord) -> (bool, String) {
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let _ = tx
        .send(request(Some(node.clone()), CLUSTER_TYPE, &BTreeSet::new()))
        .await;
    let _ = tx
        .send(request(None, LISTENER_TYPE, &BTreeSet::new()))
        .await;
    let opened = client.stream_aggregated_resources(ReceiverStream::new(rx));
    let mut responses = match Responses::open(opened.await, record) {
        Ok(responses) => responses,
        Err(e) => return (false, e),
    };
    let mut subscribed: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let end = loop {
        let resp = match responses.next().await {
            Ok(resp) => resp,
            Err(end) => break end,
        };
        let names = subscribed.get(&resp.type_url).cloned().unwrap_or_default();
        if tx
            .send(DiscoveryRequest {
                type_url: resp.type_url.clone(),
                version_info: resp.version_info.clone(),
                response_nonce: resp.nonce.clone(),
                resource_names: names.into_iter().collect(),
                ..Default::default()
            })
            .await
            .is_err()
        {
            break "request channel closed".into();
        }
        let (dependent, wanted) = match resp.type_url.as_str() {
            CLUSTER_TYPE => (ENDPOINT_TYPE, eds_cluster_names(&resp.resources)),
            LISTENER_TYPE => (ROUTE_TYPE, rds_route_names(&resp.resources)),
            _ => continue,
        };
        if subscribed.get(dependent) != Some(&wanted) {
            subscribed.insert(dependent.to_string(), wanted.clone());
            if tx.send(request(None, dependent, &wanted)).await.is_err() {
                break "request channel closed".into();
            }
        }
    };
    (responses.admitted, end)
}

/// One delta stream: wildcard CDS and LDS, EDS/RDS subscriptions following them.
async fn delta_stream(client: &mut Client, node: &Node, record: &ProxyRecord) -> (bool, String) {
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    for (i, t) in [CLUSTER_TYPE, LISTENER_TYPE].into_iter().enumerate() {
        let _ = tx
            .send(DeltaDiscoveryRequest {
                node: (i == 0).then(|| node.clone()),
                type_url: t.into(),
                ..Default::default()
            })
            .await;
    }
    let opened = client.delta_aggregated_resources(ReceiverStream::new(rx));
    let mut responses = match Responses::open(opened.await, record) {
        Ok(responses) => responses,
        Err(e) => return (false, e),
    };
    // Resources held per type, to know the full set after each delta.
    let mut held: BTreeMap<String, BTreeMap<String, Any>> = BTreeMap::new();
    let mut subscribed: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let end = loop {
        let resp = match responses.next().await {
            Ok(resp) => resp,
            Err(end) => break end,
        };
        let set = held.entry(resp.type_url.clone()).or_default();
        for r in &resp.resources {
            if let Some(a) = &r.resource {
                set.insert(r.name.clone(), a.clone());
            }
        }
        for name in &resp.removed_resources {
            set.remove(name);
        }
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break "request channel closed".into();
        }
        let all: Vec<Any> = match resp.type_url.as_str() {
            CLUSTER_TYPE | LISTENER_TYPE => set.values().cloned().collect(),
            _ => continue,
        };
        let (dependent, wanted) = match resp.type_url.as_str() {
            CLUSTER_TYPE => (ENDPOINT_TYPE, eds_cluster_names(&all)),
            _ => (ROUTE_TYPE, rds_route_names(&all)),
        };
        let have = subscribed.entry(dependent).or_default();
        let subscribe: Vec<String> = wanted.difference(have).cloned().collect();
        let unsubscribe: Vec<String> = have.difference(&wanted).cloned().collect();
        if !subscribe.is_empty() || !unsubscribe.is_empty() {
            *have = wanted;
            if tx
                .send(DeltaDiscoveryRequest {
                    type_url: dependent.into(),
                    resource_names_subscribe: subscribe,
                    resource_names_unsubscribe: unsubscribe,
                    ..Default::default()
                })
                .await
                .is_err()
            {
                break "request channel closed".into();
            }
        }
    };
    (responses.admitted, end)
}

/// Runs one simulated proxy until its task is aborted: a stream, and after the stream ends a
/// jittered exponential backoff (reset once a stream was admitted), then a new stream with a
/// fresh subscription, as Envoy does.
pub async fn run_proxy(
    channel: tonic::transport::Channel,
    node: Node,
    record: Arc<ProxyRecord>,
    delta: bool,
) {
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024);
    let mut attempt: u32 = 0;
    loop {
        let (admitted, why) = if delta {
            delta_stream(&mut client, &node, &record).await
        } else {
            sotw_stream(&mut client, &node, &record).await
        };
        record.reconnects.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node = %node.id, %why, "simulated proxy stream ended; retrying");
        if admitted {
            attempt = 0;
        }
        let cap = RETRY_BASE
            .saturating_mul(1u32 << attempt.min(16))
            .min(RETRY_MAX);
        attempt += 1;
        let jitter = jitter_fraction(&node.id, attempt);
        tokio::time::sleep(cap.mul_f64(jitter)).await;
    }
}

/// A pseudo-random fraction in [0, 1) from the node id and attempt (no RNG dependency;
/// spreads proxies' retries as Envoy's random jitter does).
fn jitter_fraction(id: &str, attempt: u32) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut h);
    attempt.hash(&mut h);
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        .hash(&mut h);
    (h.finish() % 1_000_000) as f64 / 1_000_000.0
}

// ---- measurements ----

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(mut samples: Vec<Duration>) -> Summary {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        ms(samples[i])
    };
    Summary {
        count: samples.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: samples.last().map(|d| ms(*d)).unwrap_or(0.0),
    }
}

/// Waits until every proxy in `expected` received `kind` at or after `t0` (or `timeout`),
/// calling `tick` about once a second with how many have; returns each one's delay and how
/// many never got it.
pub async fn converge(
    records: &[Arc<ProxyRecord>],
    expected: &[usize],
    kind: &str,
    t0: Instant,
    timeout: Duration,
    mut tick: impl FnMut(usize, usize),
) -> (Vec<Duration>, usize) {
    let deadline = t0 + timeout;
    let mut next_tick = Instant::now() + Duration::from_secs(1);
    loop {
        let got: Vec<Option<Instant>> = expected
            .iter()
            .map(|k| records[*k].first_after(kind, t0))
            .collect();
        let missing = got.iter().filter(|g| g.is_none()).count();
        if missing == 0 || Instant::now() > deadline {
            let delays = got.into_iter().flatten().map(|t| t - t0).collect();
            return (delays, missing);
        }
        if Instant::now() >= next_tick {
            tick(expected.len() - missing, expected.len());
            next_tick += Duration::from_secs(1);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_samples_and_jitter_stays_below_one() {
        let s = summarize((1..=100).map(Duration::from_millis).collect());
        assert_eq!(
            (s.count, s.p50_ms, s.p99_ms, s.max_ms),
            (100, 50.0, 99.0, 100.0)
        );
        assert_eq!(summarize(Vec::new()).p99_ms, 0.0);
        for a in 0..50 {
            let j = jitter_fraction("sidecar~10.200.0.1~x", a);
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
