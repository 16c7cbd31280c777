//! The cluster side of installing: server-side apply of a manifest (field manager
//! [`FIELD_MANAGER`]), pruning what an install no longer asks for, waiting for readiness,
//! `verify-install`'s checks, `uninstall`, revision tags, and the operator's reconcile loop.
//!
//! Owns every API call of the installer. Must not decide what an install contains (that is
//! [`super::manifest`] and [`super::tag`]); it finds installed objects again only by the
//! [`super::labels`] they carry.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::watcher;
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::manifest::{ComponentName, Manifest};
use super::spec::{InstallSpec, Source};
use super::{FIELD_MANAGER, labels, manifest, spec, tag};
use crate::model::config::revision;

/// Errors talking to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Client(String),
    #[error("{action} {object}: {source}")]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    NotReady(String),
    #[error("{0}")]
    Spec(#[from] spec::SpecError),
}

/// Every kind an install may create, in apply order (deletes go in reverse). Prune, verify
/// and uninstall look for installed objects among these.
pub const INSTALLED_KINDS: [(&str, &str); 14] = [
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("v1", "ConfigMap"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    (
        "admissionregistration.k8s.io/v1",
        "MutatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingWebhookConfiguration",
    ),
];

/// A client for `kubeconfig`, or, as kubectl does, for `$KUBECONFIG`, `~/.kube/config` or the
/// cluster this process runs in.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, ClusterError> {
    match kubeconfig {
        Some(path) => crate::sources::kube::client(Some(path))
            .await
            .map_err(|e| ClusterError::Client(e.to_string())),
        None => {
            let config = Config::infer().await.map_err(|e| {
                ClusterError::Client(format!(
                    "no cluster to talk to ({e}); pass --kubeconfig or set KUBECONFIG"
                ))
            })?;
            Client::try_from(config).map_err(|e| ClusterError::Client(e.to_string()))
        }
    }
}

/// `Kind namespace/name` (or `Kind name`) of a rendered object, for progress lines and errors.
pub fn describe(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("?");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// istioctl's `Kind: name.namespace` for `verify-install` lines.
fn verify_name(obj: &Value) -> String {
    let kind = obj["kind"].as_str().unwrap_or("?");
    let name = obj["metadata"]["name"].as_str().unwrap_or("?");
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind}: {name}.{ns}"),
        None => format!("{kind}: {name}"),
    }
}

/// Applies, finds and deletes installed objects; resolves each kind once.
pub struct Installer {
    client: Client,
    kinds: Mutex<HashMap<(String, String), (ApiResource, ApiCapabilities)>>,
}

impl Installer {
    pub fn new(client: Client) -> Installer {
        Installer {
            client,
            kinds: Mutex::new(HashMap::new()),
        }
    }

    async fn resource(
        &self,
        api_version: &str,
        kind: &str,
    ) -> Result<(ApiResource, ApiCapabilities), ClusterError> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.kinds.lock().await.get(&key) {
            return Ok(found.clone());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|source| ClusterError::Api {
                action: "find the API of",
                object: format!("{api_version} {kind}"),
                source,
            })?;
        self.kinds.lock().await.insert(key, found.clone());
        Ok(found)
    }

    async fn api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Api<DynamicObject>, ClusterError> {
        let (ar, caps) = self.resource(api_version, kind).await?;
        Ok(match (caps.scope, namespace) {
            (Scope::Namespaced, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        })
    }

    async fn api_of(&self, obj: &Value) -> Result<Api<DynamicObject>, ClusterError> {
        self.api(
            obj["apiVersion"].as_str().unwrap_or_default(),
            obj["kind"].as_str().unwrap_or_default(),
            obj["metadata"]["namespace"].as_str(),
        )
        .await
    }

    /// Server-side apply of one object (conflicts with other managers are taken over, as
    /// istioctl does). Returns the object as the API server stored it.
    pub async fn apply(&self, obj: &Value) -> Result<DynamicObject, ClusterError> {
        let api = self.api_of(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await
        .map_err(|source| ClusterError::Api {
            action: "apply",
            object: describe(obj),
            source,
        })
    }

    /// Applies a manifest component by component, calling `on_applied` with each object and
    /// `on_component` when a component is in place; CRDs are waited for until Established so
    /// that what follows can use them.
    pub async fn apply_manifest(
        &self,
        manifest: &Manifest,
        on_applied: &mut (dyn FnMut(&Value) + Send),
        on_component: &mut (dyn FnMut(ComponentName) + Send),
    ) -> Result<(), ClusterError> {
        for (component, objects) in &manifest.components {
            for obj in objects {
                self.apply(obj).await?;
                on_applied(obj);
            }
            let crds: Vec<&Value> = objects
                .iter()
                .filter(|o| o["kind"] == "CustomResourceDefinition")
                .collect();
            self.wait_until(&crds, Duration::from_secs(60), &mut |_| {})
                .await?;
            on_component(*component);
        }
        Ok(())
    }

    /// Every installed object whose labels match `selector`, with its `apiVersion` and `kind`
    /// (lists leave them out), in the order of [`INSTALLED_KINDS`].
    pub async fn list_installed(&self, selector: &str) -> Result<Vec<Value>, ClusterError> {
        let mut found = Vec::new();
        for (api_version, kind) in INSTALLED_KINDS {
            let api = self.api(api_version, kind, None).await?;
            let list = api
                .list(&ListParams::default().labels(selector))
                .await
                .map_err(|source| ClusterError::Api {
                    action: "list",
                    object: format!("{kind} with labels {selector}"),
                    source,
                })?;
            for item in list.items {
                let mut v = serde_json::to_value(&item).unwrap_or(Value::Null);
                v["apiVersion"] = api_version.into();
                v["kind"] = kind.into();
                found.push(v);
            }
        }
        Ok(found)
    }

    /// Deletes the objects of a revision that `manifest` no longer has (e.g. a gateway the
    /// spec disabled), calling `on_deleted` with each. Objects shared by all revisions (CRDs,
    /// the namespace) are never pruned.
    pub async fn prune(
        &self,
        spec: &InstallSpec,
        manifest: &Manifest,
        on_deleted: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<String>, ClusterError> {
        let wanted: std::collections::HashSet<String> = manifest.objects().map(describe).collect();
        let selector = format!(
            "{},{}={}",
            labels::COMPONENT,
            labels::REVISION,
            spec.revision_label()
        );
        let mut gone = Vec::new();
        let mut installed = self.list_installed(&selector).await?;
        installed.reverse();
        for value in installed {
            let what = describe(&value);
            if wanted.contains(&what) {
                continue;
            }
            self.delete(&value).await?;
            on_deleted(&what);
            gone.push(what);
        }
        Ok(gone)
    }

    async fn delete(&self, obj: &Value) -> Result<(), ClusterError> {
        let api = self.api_of(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let deleted = api.delete(name, &DeleteParams::background()).await;
        gone_is_fine(deleted, "delete", obj)
    }

    /// `obj` as the API server has it now, `None` when it has none.
    async fn live(&self, obj: &Value) -> Result<Option<Value>, ClusterError> {
        let api = self.api_of(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        match api.get_opt(name).await {
            Ok(live) => Ok(live.map(|live| serde_json::to_value(&live).unwrap_or(Value::Null))),
            Err(source) => Err(ClusterError::Api {
                action: "get",
                object: describe(obj),
                source,
            }),
        }
    }

    /// Why `obj` is not ready yet, or `None` when it is (Deployments: rolled out and
    /// available; CRDs: Established; anything else: present).
    pub async fn not_ready(&self, obj: &Value) -> Result<Option<String>, ClusterError> {
        Ok(match self.live(obj).await? {
            Some(live) => readiness(&live),
            None => Some("not found".into()),
        })
    }

    /// Waits until every object of `objects` is ready, calling `progress` with what is still
    /// pending about every two seconds; fails after `timeout` naming what was not ready.
    pub async fn wait_until(
        &self,
        objects: &[&Value],
        timeout: Duration,
        progress: &mut (dyn FnMut(&[String]) + Send),
    ) -> Result<(), ClusterError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_report = tokio::time::Instant::now();
        loop {
            let mut pending = Vec::new();
            for obj in objects {
                if let Some(why) = self.not_ready(obj).await? {
                    pending.push(format!("{}: {why}", describe(obj)));
                }
            }
            if pending.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClusterError::NotReady(format!(
                    "not ready after {}s: {}; check `kubectl get pods -A` and the pods' events, \
                     or raise --readiness-timeout",
                    timeout.as_secs(),
                    pending.join("; ")
                )));
            }
            if last_report.elapsed() >= Duration::from_secs(2) {
                progress(&pending);
                last_report = tokio::time::Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `verify-install`: each object of the manifest, present and ready, as istioctl prints
    /// them (`Kind: name.namespace` and the problem, if any).
    pub async fn verify(
        &self,
        objects: &[Value],
    ) -> Result<Vec<(String, Option<String>)>, ClusterError> {
        let mut checks = Vec::new();
        for obj in objects {
            checks.push((verify_name(obj), self.not_ready(obj).await?));
        }
        Ok(checks)
    }

    /// Removes a revision's objects (`purge`: every installed object of every revision, the
    /// CRDs, the revision tags and the namespace the install created), webhooks first, and
    /// waits until they are gone. Returns what was deleted.
    pub async fn uninstall(
        &self,
        revision: &str,
        purge: bool,
        on_deleted: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<String>, ClusterError> {
        let selectors = if purge {
            vec![labels::COMPONENT.to_string(), labels::TAG.to_string()]
        } else {
            vec![format!(
                "{},{}={revision}",
                labels::COMPONENT,
                labels::REVISION
            )]
        };
        let mut targets = Vec::new();
        for selector in &selectors {
            for value in self.list_installed(selector).await? {
                // The operator's own objects are `operator remove`'s, not an install's.
                if value["metadata"]["labels"][labels::COMPONENT] == super::operator::LABEL.1 {
                    continue;
                }
                if !targets
                    .iter()
                    .any(|t: &Value| describe(t) == describe(&value))
                {
                    targets.push(value);
                }
            }
        }
        // Webhooks and workloads first, CRDs and the namespace last.
        targets.sort_by_key(|t| {
            std::cmp::Reverse(
                INSTALLED_KINDS
                    .iter()
                    .position(|(_, k)| t["kind"] == *k)
                    .unwrap_or(0),
            )
        });
        self.delete_all(&targets, on_deleted).await
    }

    /// Deletes `targets` in order and waits until the API server no longer has them.
    pub async fn delete_all(
        &self,
        targets: &[Value],
        on_deleted: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<String>, ClusterError> {
        let mut deleted = Vec::new();
        for t in targets {
            self.delete(t).await?;
            let what = describe(t);
            on_deleted(&what);
            deleted.push(what);
        }
        let deadline = tokio::time::Instant::now() + DELETION_TIMEOUT;
        for t in targets {
            let mut nudged = tokio::time::Instant::now();
            while let Some(why) = self.still_present(t).await? {
                if nudged.elapsed() >= NUDGE_AFTER {
                    self.nudge(t).await?;
                    nudged = tokio::time::Instant::now();
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClusterError::NotReady(format!(
                        "{} still present {}s after its deletion ({why}); see \
                         `kubectl get -o yaml` for what holds it, then re-run the uninstall",
                        describe(t),
                        DELETION_TIMEOUT.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        Ok(deleted)
    }

    /// Touches a deleted object's annotations so that the controllers holding it (the API
    /// server's CRD cleanup, the namespace controller) see an update and sync it again: the
    /// CRD cleanup drops its turn on a write conflict and otherwise waits for the informer's
    /// resync, minutes later.
    async fn nudge(&self, obj: &Value) -> Result<(), ClusterError> {
        let api = self.api_of(obj).await?;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default();
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default();
        let patch = json!({"metadata": {"annotations": {NUDGE_ANNOTATION: stamp}}});
        let patched = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
        gone_is_fine(patched, "annotate", obj)
    }

    /// `None` once the API server no longer has `obj`; otherwise what keeps it (finalizers,
    /// and a CRD's conditions from the API server's instance cleanup).
    async fn still_present(&self, obj: &Value) -> Result<Option<String>, ClusterError> {
        Ok(self.live(obj).await?.as_ref().map(deletion_holds))
    }

    async fn mutating_webhooks(&self) -> Result<Api<DynamicObject>, ClusterError> {
        self.api(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            None,
        )
        .await
    }

    /// `tag set`: applies the tag's objects; for the `default` tag also deactivates the
    /// default revision's own injection webhook (if installed) so pods are injected once.
    pub async fn set_tag(
        &self,
        tag_name: &str,
        revision: &str,
        namespace: &str,
        overwrite: bool,
    ) -> Result<Vec<String>, ClusterError> {
        let objects = tag::render(tag_name, revision, namespace);
        let mwc = self.mutating_webhooks().await?;
        let name = tag::webhook_name(tag_name);
        if !overwrite && let Ok(Some(existing)) = mwc.get_opt(&name).await {
            let current = existing
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::REVISION))
                .cloned()
                .unwrap_or_default();
            if current != revision::label(revision) {
                return Err(ClusterError::NotReady(format!(
                    "tag {tag_name:?} already points at revision {current:?}; pass --overwrite \
                     to move it to {revision:?}"
                )));
            }
        }
        let mut changed = Vec::new();
        for obj in &objects {
            self.apply(obj).await?;
            changed.push(describe(obj));
        }
        if tag_name == "default"
            && let Ok(Some(own)) = mwc.get_opt("istio-sidecar-injector").await
        {
            let mut own = serde_json::to_value(&own).unwrap_or(Value::Null);
            strip_server_fields(&mut own);
            own["apiVersion"] = "admissionregistration.k8s.io/v1".into();
            own["kind"] = "MutatingWebhookConfiguration".into();
            let off = tag::deactivated(own);
            self.apply(&off).await?;
            changed.push(format!("{} (deactivated)", describe(&off)));
        }
        Ok(changed)
    }

    /// `tag list`: every tag, its revision, and the namespaces labelled `istio.io/rev=<tag>`.
    pub async fn list_tags(&self) -> Result<Vec<tag::TagRow>, ClusterError> {
        let mwc = self.mutating_webhooks().await?;
        let list = mwc
            .list(&ListParams::default().labels(labels::TAG))
            .await
            .map_err(|source| ClusterError::Api {
                action: "list",
                object: "revision tags".into(),
                source,
            })?;
        let namespaces = self.api("v1", "Namespace", None).await?;
        let mut rows = Vec::new();
        for item in list.items {
            let l = item.metadata.labels.clone().unwrap_or_default();
            let tag_name = l.get(labels::TAG).cloned().unwrap_or_default();
            let ns_list = namespaces
                .list(&ListParams::default().labels(&format!("{}={tag_name}", labels::REVISION)))
                .await
                .map_err(|source| ClusterError::Api {
                    action: "list",
                    object: "namespaces".into(),
                    source,
                })?;
            rows.push(tag::TagRow {
                tag: tag_name,
                revision: l.get(labels::REVISION).cloned().unwrap_or_default(),
                namespaces: ns_list
                    .items
                    .iter()
                    .filter_map(|n| n.metadata.name.clone())
                    .collect(),
            });
        }
        rows.sort_by(|a, b| a.tag.cmp(&b.tag));
        Ok(rows)
    }

    /// `operator remove`: deletes the operator's objects, last applied first. The CRD stays:
    /// deleting it would delete every IstioOperator resource.
    pub async fn remove_operator(
        &self,
        on_deleted: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Vec<String>, ClusterError> {
        let selector = format!("{}={}", super::operator::LABEL.0, super::operator::LABEL.1);
        let mut targets: Vec<Value> = self
            .list_installed(&selector)
            .await?
            .into_iter()
            .filter(|o| o["kind"] != "CustomResourceDefinition")
            .collect();
        targets.reverse();
        self.delete_all(&targets, on_deleted).await
    }

    /// `tag remove`: deletes the tag's objects.
    pub async fn remove_tag(&self, tag_name: &str) -> Result<Vec<String>, ClusterError> {
        let selector = format!("{}={tag_name}", labels::TAG);
        let targets = self.list_installed(&selector).await?;
        if targets.is_empty() {
            return Err(ClusterError::NotReady(format!(
                "no revision tag {tag_name:?}; `navarch tag list` shows the tags"
            )));
        }
        self.delete_all(&targets, &mut |_| {}).await
    }
}

/// Drops what the API server owns from a read object, so it can be applied again.
fn strip_server_fields(obj: &mut Value) {
    if let Some(meta) = obj["metadata"].as_object_mut() {
        for key in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            meta.remove(key);
        }
    }
}

/// How long an uninstall waits for what it deleted to be gone. The API server removes a CRD
/// only after its instance cleanup, which it retries with backoff when its storage for the
/// CRD is not ready yet (a CRD deleted soon after it was created).
const DELETION_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a deleted object may linger before the uninstall touches it (see `nudge`).
const NUDGE_AFTER: Duration = Duration::from_secs(10);

/// The annotation the uninstall sets on an object whose deletion lingers.
const NUDGE_ANNOTATION: &str = "install.operator.istio.io/uninstall-retried-at";

/// What holds a deleted object: its finalizers and, for a CRD, the conditions the API
/// server's cleanup reports (`Terminating`, `InstanceDeletion*`).
fn deletion_holds(live: &Value) -> String {
    let finalizers: Vec<&str> = live["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut holds = if finalizers.is_empty() {
        vec!["no finalizers".to_string()]
    } else {
        vec![format!("finalizers {}", finalizers.join(", "))]
    };
    for c in live["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let kind = c["type"].as_str().unwrap_or_default();
        if kind == "Terminating" || kind.starts_with("InstanceDeletion") {
            holds.push(format!(
                "{kind}={} {}: {}",
                c["status"].as_str().unwrap_or_default(),
                c["reason"].as_str().unwrap_or_default(),
                c["message"].as_str().unwrap_or_default()
            ));
        }
    }
    holds.join("; ")
}

/// `Ok` for a write that succeeded or found `obj` already gone; the API error otherwise.
fn gone_is_fine<T>(
    result: Result<T, kube::Error>,
    action: &'static str,
    obj: &Value,
) -> Result<(), ClusterError> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(ClusterError::Api {
            action,
            object: describe(obj),
            source,
        }),
    }
}

/// Why a live object is not ready, or `None` when it is.
fn readiness(live: &Value) -> Option<String> {
    match live["kind"].as_str() {
        Some("Deployment") => {
            let want = live["spec"]["replicas"].as_u64().unwrap_or(1);
            let status = &live["status"];
            let generation = live["metadata"]["generation"].as_u64().unwrap_or(0);
            let observed = status["observedGeneration"].as_u64().unwrap_or(0);
            let updated = status["updatedReplicas"].as_u64().unwrap_or(0);
            let available = status["availableReplicas"].as_u64().unwrap_or(0);
            if observed < generation {
                Some("the new spec is not observed yet".into())
            } else if updated < want || available < want {
                Some(format!(
                    "{available}/{want} replicas available ({updated} updated)"
                ))
            } else {
                None
            }
        }
        Some("CustomResourceDefinition") => {
            let established = live["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Established" && c["status"] == "True");
            (!established).then(|| "not Established".into())
        }
        _ => None,
    }
}

// ---- the operator ----

/// State of the operator's HTTP endpoint: ready once every watcher has listed.
#[derive(Debug, Default)]
pub struct OperatorState {
    pub ready: AtomicBool,
}

/// The operator: watches IstioOperator resources in `watched` namespaces and reconciles each
/// (render, apply, prune, status); a deleted IstioOperator's objects are removed. Runs until
/// the watch fails for good.
pub async fn run_operator(
    client: Client,
    watched: Vec<String>,
    state: Arc<OperatorState>,
) -> Result<(), ClusterError> {
    let installer = Installer::new(client.clone());
    let gvk = GroupVersionKind::gvk("install.istio.io", "v1alpha1", "IstioOperator");
    let ar = loop {
        match kube::discovery::pinned_kind(&client, &gvk).await {
            Ok((ar, _)) => break ar,
            Err(e) => {
                tracing::warn!(error = %e, "the IstioOperator CRD is not served yet; retrying in 2s (navarch operator init installs it)");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    let streams = watched.iter().map(|ns| {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        watcher(api, watcher::Config::default()).boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut listed = 0;
    let mut reconciled: HashMap<(String, String), i64> = HashMap::new();
    let mut versions: HashMap<String, String> = HashMap::new();
    tracing::info!(namespaces = %watched.join(","), "operator watching IstioOperator resources");
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "IstioOperator watch error; the watcher retries");
                continue;
            }
        };
        match event {
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                listed += 1;
                if listed >= watched.len() {
                    state.ready.store(true, Ordering::Relaxed);
                }
            }
            watcher::Event::Apply(iop) | watcher::Event::InitApply(iop) => {
                let key = (
                    iop.metadata.namespace.clone().unwrap_or_default(),
                    iop.metadata.name.clone().unwrap_or_default(),
                );
                let generation = iop.metadata.generation.unwrap_or(0);
                if reconciled.get(&key) == Some(&generation) {
                    continue;
                }
                let result = reconcile(&installer, &iop, &mut versions).await;
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &key.0, &ar);
                let status = match &result {
                    Ok(summary) => {
                        tracing::info!(istiooperator = %format!("{}/{}", key.0, key.1), %summary, "reconciled");
                        operator_status("HEALTHY", "True", "Reconciled", summary)
                    }
                    Err(e) => {
                        tracing::error!(istiooperator = %format!("{}/{}", key.0, key.1), error = %e, "reconcile failed; fix the resource, the operator retries on its next change");
                        operator_status("ERROR", "False", "ReconcileFailed", &e.to_string())
                    }
                };
                if let Err(e) = api
                    .patch_status(&key.1, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                {
                    tracing::warn!(error = %e, "writing the IstioOperator status");
                }
                reconciled.insert(key, generation);
            }
            watcher::Event::Delete(iop) => {
                let name = iop.metadata.name.clone().unwrap_or_default();
                let ns = iop.metadata.namespace.clone().unwrap_or_default();
                reconciled.remove(&(ns.clone(), name.clone()));
                let selector = format!(
                    "{},{}={name},{}={ns}",
                    labels::COMPONENT,
                    labels::OWNING_RESOURCE,
                    labels::OWNING_RESOURCE_NAMESPACE
                );
                match installer.list_installed(&selector).await {
                    Ok(found) => {
                        let targets: Vec<Value> = found
                            .into_iter()
                            .filter(|o| {
                                o["kind"] != "CustomResourceDefinition" && o["kind"] != "Namespace"
                            })
                            .collect();
                        let mut log = |what: &str| tracing::info!(istiooperator = %format!("{ns}/{name}"), object = %what, "removed (its IstioOperator was deleted)");
                        if let Err(e) = installer.delete_all(&targets, &mut log).await {
                            tracing::error!(error = %e, "removing a deleted IstioOperator's objects");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "listing a deleted IstioOperator's objects")
                    }
                }
            }
        }
    }
    Err(ClusterError::Client("the IstioOperator watch ended".into()))
}

fn operator_status(status: &str, condition: &str, reason: &str, message: &str) -> Value {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    json!({"status": {
        "status": status,
        "message": message,
        "conditions": [{"type": "Reconciled", "status": condition, "reason": reason,
            "message": message, "lastTransitionTime": now}],
    }})
}

/// One reconcile of an IstioOperator: render it (profile + its spec), apply, prune. Logs each
/// object that was created or changed and each one pruned; returns a one-line summary.
async fn reconcile(
    installer: &Installer,
    iop: &DynamicObject,
    versions: &mut HashMap<String, String>,
) -> Result<String, ClusterError> {
    let mut doc = serde_json::to_value(iop).unwrap_or(Value::Null);
    doc["kind"] = "IstioOperator".into();
    doc["apiVersion"] = "install.istio.io/v1alpha1".into();
    let ns = iop.metadata.namespace.clone().unwrap_or_default();
    let name = iop.metadata.name.clone().unwrap_or_default();
    let origin = format!("IstioOperator {ns}/{name}");
    let spec = spec::build(&[Source::Object {
        origin: &origin,
        doc: &doc,
    }])?;
    let manifest = manifest::render(&spec);
    let mut changed = 0;
    let mut unchanged = 0;
    for obj in manifest.objects() {
        let live = installer.apply(obj).await?;
        let what = describe(obj);
        let rv = live.metadata.resource_version.clone().unwrap_or_default();
        match versions.insert(what.clone(), rv.clone()) {
            Some(before) if before == rv => unchanged += 1,
            Some(_) => {
                changed += 1;
                tracing::info!(istiooperator = %origin, object = %what, "changed");
            }
            None => {
                changed += 1;
                tracing::info!(istiooperator = %origin, object = %what, "applied");
            }
        }
    }
    let mut log = |what: &str| tracing::info!(istiooperator = %origin, object = %what, "pruned");
    let pruned = installer.prune(&spec, &manifest, &mut log).await?;
    for p in &pruned {
        versions.remove(p);
    }
    let by_component: BTreeMap<&str, usize> = manifest
        .components
        .iter()
        .map(|(c, o)| (c.as_str(), o.len()))
        .collect();
    Ok(format!(
        "{changed} applied or changed, {unchanged} unchanged, {} pruned ({by_component:?})",
        pruned.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_an_install_renders_is_one_prune_and_uninstall_look_for() {
        for profile in super::spec::PROFILES {
            let spec = spec::build(&[
                Source::Set(&format!("profile={profile}")),
                Source::Set("components.egressGateways[0].enabled=true"),
            ])
            .unwrap();
            for obj in manifest::render(&spec).objects() {
                assert!(
                    INSTALLED_KINDS
                        .iter()
                        .any(|(v, k)| obj["apiVersion"] == *v && obj["kind"] == *k),
                    "{profile}: {} is not in INSTALLED_KINDS",
                    describe(obj)
                );
            }
        }
        for obj in tag::render("default", "canary", "istio-system") {
            assert!(INSTALLED_KINDS.iter().any(|(_, k)| obj["kind"] == *k));
        }
    }

    #[test]
    fn readiness_follows_the_rollout_and_the_established_condition() {
        let deployment = |observed: u64, available: u64| {
            json!({"kind": "Deployment", "metadata": {"generation": 2},
                "spec": {"replicas": 2},
                "status": {"observedGeneration": observed, "updatedReplicas": 2,
                    "availableReplicas": available}})
        };
        assert_eq!(
            readiness(&deployment(1, 2)).as_deref(),
            Some("the new spec is not observed yet")
        );
        assert_eq!(
            readiness(&deployment(2, 1)).as_deref(),
            Some("1/2 replicas available (2 updated)")
        );
        assert_eq!(readiness(&deployment(2, 2)), None);
        let crd = |status: &str| {
            json!({"kind": "CustomResourceDefinition",
                "status": {"conditions": [{"type": "Established", "status": status}]}})
        };
        assert_eq!(readiness(&crd("False")).as_deref(), Some("not Established"));
        assert_eq!(readiness(&crd("True")), None);
        assert_eq!(readiness(&json!({"kind": "ConfigMap"})), None);
    }

    #[test]
    fn a_stuck_deletion_names_its_finalizers_and_the_cleanup_conditions() {
        let crd = json!({"kind": "CustomResourceDefinition",
            "metadata": {"finalizers": ["customresourcecleanup.apiextensions.k8s.io"]},
            "status": {"conditions": [
                {"type": "Established", "status": "True"},
                {"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress",
                    "message": "CustomResource deletion is in progress"},
                {"type": "InstanceDeletionFailed", "status": "True", "reason": "InstanceDeletionFailed",
                    "message": "could not list instances"}]}});
        assert_eq!(
            deletion_holds(&crd),
            "finalizers customresourcecleanup.apiextensions.k8s.io; \
             Terminating=True InstanceDeletionInProgress: CustomResource deletion is in progress; \
             InstanceDeletionFailed=True InstanceDeletionFailed: could not list instances"
        );
        assert_eq!(
            deletion_holds(&json!({"kind": "Namespace", "metadata": {}})),
            "no finalizers"
        );
    }
}
