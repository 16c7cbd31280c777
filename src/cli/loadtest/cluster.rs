//! `navarch loadtest --kube`: the synthetic mesh in a real API server. Starts a
//! [`LocalCluster`] (etcd and kube-apiserver on loopback; no controller manager, since the
//! load test writes the EndpointSlices itself), installs the CRDs of every kind istiod watches,
//! the `istio` mesh ConfigMap and a root PeerAuthentication with mTLS off, and creates the mesh
//! through kube-rs: Services, Pods (with the status a kubelet would report), one EndpointSlice
//! per Service (10.x addresses: the API server refuses loopback ones, and they are
//! configuration only), a DestinationRule and a VirtualService per Service, and optionally a
//! Sidecar per namespace. Then makes the load test's changes through the API server: a
//! VirtualService's weights, and a pod's address (Pod status, then its EndpointSlice).
//!
//! Owns the cluster's lifetime (dropped with it) and the objects' creation. Must not start
//! control planes or drive proxies.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::mesh::{self, MeshShape};
use crate::localkube::{LocalCluster, LocalClusterOptions, LocalKubeError};

/// Errors setting up or changing the mesh in the cluster.
#[derive(Debug, thiserror::Error)]
pub enum KubeMeshError {
    #[error(transparent)]
    Cluster(#[from] LocalKubeError),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Object(String),
    #[error("the CRDs were not established within 60s: {0}")]
    Crds(String),
}

/// Requests in flight while creating the mesh.
const CONCURRENCY: usize = 16;

/// The mesh in a running cluster.
pub struct KubeMesh {
    pub cluster: LocalCluster,
    client: Client,
    shape: MeshShape,
}

fn resource_of(obj: &Value) -> Result<ApiResource, KubeMeshError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Namespace" => "namespaces",
        "Node" => "nodes",
        "Service" => "services",
        "Pod" => "pods",
        "ConfigMap" => "configmaps",
        "ServiceAccount" => "serviceaccounts",
        "EndpointSlice" => "endpointslices",
        "DestinationRule" => "destinationrules",
        "VirtualService" => "virtualservices",
        "Sidecar" => "sidecars",
        "PeerAuthentication" => "peerauthentications",
        "CustomResourceDefinition" => "customresourcedefinitions",
        other => {
            return Err(KubeMeshError::Object(format!(
                "no plural known for {other}"
            )));
        }
    };
    Ok(ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(group, version, kind),
        plural,
    ))
}

fn api_for(client: &Client, obj: &Value) -> Result<Api<DynamicObject>, KubeMeshError> {
    let ar = resource_of(obj)?;
    Ok(match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    })
}

fn describe(obj: &Value) -> String {
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// Retries a request a few times: a busy API server on two cores may time out or refuse.
async fn retrying<T, F, Fut>(what: &str, mut f: F) -> Result<T, KubeMeshError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(100);
    for attempt in 0.. {
        match f().await {
            Ok(t) => return Ok(t),
            Err(e) if attempt < 6 => {
                tracing::debug!(error = %e, what, "retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(source) => {
                return Err(KubeMeshError::Kube {
                    what: what.to_string(),
                    source,
                });
            }
        }
    }
    unreachable!("the loop returns")
}

async fn create(client: &Client, obj: Value) -> Result<(), KubeMeshError> {
    let api = api_for(client, &obj)?;
    let what = format!("creating {}", describe(&obj));
    let dynamic: DynamicObject =
        serde_json::from_value(obj).map_err(|e| KubeMeshError::Object(e.to_string()))?;
    retrying(&what, || async {
        match api.create(&PostParams::default(), &dynamic).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            r => r.map(|_| ()),
        }
    })
    .await
}

async fn merge_patch(
    client: &Client,
    obj: &Value,
    subresource: Option<&str>,
    patch: Value,
) -> Result<(), KubeMeshError> {
    let api = api_for(client, obj)?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let what = format!("patching {}", describe(obj));
    let pp = PatchParams::default();
    retrying(&what, || async {
        match subresource {
            Some(sub) => api
                .patch_subresource(sub, name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
            None => api
                .patch(name, &pp, &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        }
    })
    .await
}

impl KubeMesh {
    /// Starts the cluster on `ip` and creates the mesh, printing progress through `progress`.
    pub async fn start(
        ip: &str,
        keep_files: bool,
        shape: MeshShape,
        progress: impl Fn(String),
    ) -> Result<KubeMesh, KubeMeshError> {
        let t = Instant::now();
        let cluster = LocalCluster::start(&LocalClusterOptions {
            ip: ip.to_string(),
            controller_manager: false,
            keep_files,
            service_cidr: crate::localkube::DEFAULT_SERVICE_CIDR.into(),
        })
        .await?;
        progress(format!(
            "etcd and kube-apiserver up on {ip} in {:.1}s (files in {})",
            t.elapsed().as_secs_f64(),
            cluster.dir.path().display()
        ));
        let client = cluster.client().await?;
        let mesh = KubeMesh {
            cluster,
            client,
            shape,
        };
        mesh.install_crds().await?;
        progress(format!(
            "{} Istio CRDs established",
            crate::install::istio_crds().len()
        ));
        mesh.populate(progress).await?;
        Ok(mesh)
    }

    async fn install_crds(&self) -> Result<(), KubeMeshError> {
        let crds = crate::install::istio_crds();
        for crd in &crds {
            create(&self.client, crd.clone()).await?;
        }
        let ar = resource_of(&crds[0])?;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let list =
                api.list(&Default::default())
                    .await
                    .map_err(|source| KubeMeshError::Kube {
                        what: "listing CRDs".into(),
                        source,
                    })?;
            let pending: Vec<String> = list
                .items
                .iter()
                .filter(|c| {
                    !c.data["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Established" && c["status"] == "True")
                })
                .filter_map(|c| c.metadata.name.clone())
                .collect();
            if pending.is_empty() && list.items.len() >= crds.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(KubeMeshError::Crds(pending.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn populate(&self, progress: impl Fn(String)) -> Result<(), KubeMeshError> {
        let t = Instant::now();
        let c = &self.client;
        let shape = self.shape;
        create(
            c,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
        )
        .await?;
        create(
            c,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": "istio", "namespace": "istio-system"},
                   "data": {"mesh": mesh::MESH_CONFIG, "meshNetworks": "networks: {}\n"}}),
        )
        .await?;
        create(c, mesh::peer_authentication()).await?;
        // The node the pods are assigned to (istiod reads it for locality).
        create(
            c,
            json!({"apiVersion": "v1", "kind": "Node",
                   "metadata": {"name": mesh::NODE, "labels": {"kubernetes.io/hostname": mesh::NODE}}}),
        )
        .await?;
        for n in 0..shape.namespaces {
            create(
                c,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{n}")}}),
            )
            .await?;
            // What the service-account controller would make (there is no controller
            // manager): pods are refused without it.
            create(
                c,
                json!({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": "default", "namespace": format!("ns-{n}")}}),
            )
            .await?;
            if shape.sidecar_isolation {
                create(c, mesh::sidecar(n)).await?;
            }
        }
        let done = std::sync::atomic::AtomicUsize::new(0);
        let step = (shape.services / 10).max(1);
        futures::stream::iter(0..shape.services)
            .map(|i| {
                let done = &done;
                let progress = &progress;
                async move {
                    self.create_service(i).await?;
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if n.is_multiple_of(step) || n == shape.services {
                        progress(format!(
                            "{n}/{} services with pods, EndpointSlice, DestinationRule and VirtualService in the API server after {:.1}s",
                            shape.services,
                            t.elapsed().as_secs_f64()
                        ));
                    }
                    Ok::<(), KubeMeshError>(())
                }
            })
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn create_service(&self, i: usize) -> Result<(), KubeMeshError> {
        let c = &self.client;
        let shape = &self.shape;
        create(c, mesh::service(i, shape)).await?;
        for p in 0..shape.pods_per_service {
            let pod = mesh::pod(i, p, shape);
            create(c, pod.clone()).await?;
            merge_patch(
                c,
                &pod,
                Some("status"),
                mesh::pod_status(&mesh::pod_ip(i, p, 0)),
            )
            .await?;
        }
        create(c, mesh::endpoint_slice(i, shape)).await?;
        create(c, mesh::destination_rule(i, shape)).await?;
        create(c, mesh::virtual_service(i, shape, (90, 10))).await?;
        Ok(())
    }

    /// Sets service `i`'s VirtualService weights.
    pub async fn set_weights(&self, i: usize, weights: (u32, u32)) -> Result<(), KubeMeshError> {
        let vs = mesh::virtual_service(i, &self.shape, weights);
        merge_patch(
            &self.client,
            &vs,
            None,
            json!({"spec": {"http": mesh::http_routes(i, weights)}}),
        )
        .await
    }

    /// Moves service `i`'s pod 0 to its address of churn generation `generation`: the Pod's
    /// status first (as a replaced pod would report), then the EndpointSlice. Returns when the
    /// EndpointSlice write began: the change proxies' EDS is measured from.
    pub async fn churn(&self, i: usize, generation: usize) -> Result<Instant, KubeMeshError> {
        let pod = mesh::pod(i, 0, &self.shape);
        merge_patch(
            &self.client,
            &pod,
            Some("status"),
            mesh::pod_status(&mesh::pod_ip(i, 0, generation)),
        )
        .await?;
        let slice = mesh::endpoint_slice(i, &self.shape);
        let t = Instant::now();
        merge_patch(
            &self.client,
            &slice,
            None,
            json!({"endpoints": mesh::slice_endpoints(i, &self.shape, generation)}),
        )
        .await?;
        Ok(t)
    }
}
