//! The admission webhooks istiod serves on `--webhook-addr` (15017, HTTPS): `/inject` (sidecar
//! injection: AdmissionReview v1 in, a JSON patch out) and `/validate` (Istio objects navarch
//! would reject are refused, with the field-naming message). Also their certificate: a CA and
//! a serving certificate for the revision's `istiod` Service generated at start, and the CA
//! patched into every webhook configuration that points at that Service (`caBundle`), again
//! whenever a configuration appears or changes, and before the certificate expires.
//!
//! Owns the TLS listener, the AdmissionReview handling and the injector's configuration (the
//! `istio-sidecar-injector[-<revision>]` ConfigMap, re-read when older than a few seconds).
//! The injection rules are [`crate::inject`]'s and the validation rules the sources' own
//! ([`crate::sources::objects::document_errors`]); this module must not add rules of its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, response::IntoResponse};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::inject::{self, Decision, Injector};
use crate::model::config::{ConfigKind, revision};
use crate::sources::objects::{Origin, document_errors};

/// How long a serving certificate lives; it is replaced at two thirds of that.
const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How often webhook configurations are checked for our `caBundle`.
const CA_BUNDLE_INTERVAL: Duration = Duration::from_secs(5);
/// How long a read injector ConfigMap is used before it is read again.
const CONFIG_TTL: Duration = Duration::from_secs(5);

/// Errors starting the webhook server.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("generating the webhook certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("the webhook TLS config: {0}")]
    Tls(#[from] rustls::Error),
    #[error("binding the webhook address {addr}: {source} (pick another with --webhook-addr)")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The counters istiod's dashboards read.
#[derive(Debug, Default)]
pub struct WebhookMetrics {
    pub injection_requests: AtomicU64,
    pub injection_success: AtomicU64,
    pub injection_failure: AtomicU64,
    pub injection_skip: AtomicU64,
    pub validation_passed: AtomicU64,
    pub validation_failed: AtomicU64,
}

impl WebhookMetrics {
    /// (name, help, value) of each counter, with istiod's names.
    pub fn counters(&self) -> [(&'static str, &'static str, u64); 6] {
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed);
        #[rustfmt::skip]
        let counters = [
            ("sidecar_injection_requests_total", "Total number of sidecar injection requests.", v(&self.injection_requests)),
            ("sidecar_injection_success_total", "Total number of successful sidecar injection requests.", v(&self.injection_success)),
            ("sidecar_injection_failure_total", "Total number of failed sidecar injection requests.", v(&self.injection_failure)),
            ("sidecar_injection_skip_total", "Total number of skipped sidecar injection requests.", v(&self.injection_skip)),
            ("galley_validation_passed", "Resource is valid.", v(&self.validation_passed)),
            ("galley_validation_failed", "Resource validation failed.", v(&self.validation_failed)),
        ];
        counters
    }
}

/// What the webhook serves for.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    pub system_namespace: String,
    /// Empty for the default revision.
    pub revision: String,
}

impl WebhookOptions {
    /// The revision's control plane Service (what the webhook configurations call).
    pub fn service(&self) -> String {
        revision::named("istiod", &self.revision)
    }

    fn injector_config_map(&self) -> String {
        revision::named("istio-sidecar-injector", &self.revision)
    }

    fn xds_address(&self) -> String {
        revision::xds_address(&self.system_namespace, &self.revision)
    }
}

/// A CA and a serving certificate signed by it, PEM.
#[derive(Clone)]
pub struct Certificates {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub created: Instant,
}

/// Generates the webhook's CA and serving certificate for `service.namespace.svc` (and its
/// other DNS forms, `localhost` and the bound IP).
pub fn generate_certificates(opts: &WebhookOptions) -> Result<Certificates, WebhookError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = time_now();
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "navarch webhook CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.not_before = now;
    ca_params.not_after = now + CERT_LIFETIME;
    let ca_key = KeyPair::generate()?;
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let service = opts.service();
    let ns = &opts.system_namespace;
    let mut names = vec![
        format!("{service}.{ns}.svc"),
        format!("{service}.{ns}.svc.cluster.local"),
        format!("{service}.{ns}"),
        service.clone(),
        "localhost".to_string(),
    ];
    if !opts.addr.ip().is_unspecified() {
        names.push(opts.addr.ip().to_string());
    }
    let mut params = CertificateParams::new(names)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("{service}.{ns}.svc"));
    params.not_before = now;
    params.not_after = now + CERT_LIFETIME;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Certificates {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        created: Instant::now(),
    })
}

fn time_now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

fn tls_config(certs: &Certificates) -> Result<rustls::ServerConfig, WebhookError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = vec![
        CertificateDer::from_pem_slice(certs.cert_pem.as_bytes())
            .map_err(|e| rustls::Error::General(e.to_string()))?,
    ];
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes())
        .map_err(|e| rustls::Error::General(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The injector and when its ConfigMap was read.
type CachedInjector = (Instant, Arc<Injector>);

#[derive(Clone)]
struct WebhookState {
    opts: WebhookOptions,
    client: kube::Client,
    injector: Arc<Mutex<Option<CachedInjector>>>,
    metrics: Arc<WebhookMetrics>,
}

impl WebhookState {
    /// The injector, from the ConfigMap (re-read after [`CONFIG_TTL`]); the built-in defaults
    /// when the ConfigMap is missing.
    async fn injector(&self) -> Result<Arc<Injector>, String> {
        let mut cached = self.injector.lock().await;
        if let Some((at, injector)) = cached.as_ref()
            && at.elapsed() < CONFIG_TTL
        {
            return Ok(injector.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.opts.system_namespace);
        let name = self.opts.injector_config_map();
        let data = match api.get_opt(&name).await {
            Ok(Some(cm)) => cm.data.unwrap_or_default(),
            Ok(None) => {
                tracing::warn!(configmap = %name, "injector ConfigMap missing; injecting with the defaults (navarch install creates it)");
                Default::default()
            }
            Err(e) => return Err(format!("reading ConfigMap {name}: {e}")),
        };
        let get = |k: &str| data.get(k).map(String::as_str).unwrap_or_default();
        let injector = Injector::from_config_map(
            get("config"),
            get("values"),
            &self.opts.revision,
            &self.opts.xds_address(),
        )
        .map_err(|e| format!("ConfigMap {name}: {e}"))?;
        let injector = Arc::new(injector);
        *cached = Some((Instant::now(), injector.clone()));
        Ok(injector)
    }
}

/// Serves `/inject` and `/validate` on `opts.addr` until the process ends, replacing the
/// certificate before it expires, and keeps the `caBundle` of the webhook configurations that
/// point at this revision's Service current.
pub async fn serve(
    opts: WebhookOptions,
    client: kube::Client,
    metrics: Arc<WebhookMetrics>,
) -> Result<(), WebhookError> {
    let certs = generate_certificates(&opts)?;
    let acceptor = Arc::new(std::sync::RwLock::new(tokio_rustls::TlsAcceptor::from(
        Arc::new(tls_config(&certs)?),
    )));
    let listener = tokio::net::TcpListener::bind(opts.addr)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: opts.addr,
            source,
        })?;
    tracing::info!(addr = %opts.addr, service = %opts.service(), "admission webhooks (/inject, /validate) serving");
    let ca = Arc::new(std::sync::RwLock::new(certs.ca_pem.clone()));
    tokio::spawn(keep_ca_bundles(opts.clone(), client.clone(), ca.clone()));
    tokio::spawn(rotate(opts.clone(), acceptor.clone(), ca, certs.created));
    let state = WebhookState {
        opts,
        client,
        injector: Arc::new(Mutex::new(None)),
        metrics,
    };
    let app = Router::new()
        .route("/inject", post(inject_handler))
        .route("/validate", post(validate_handler))
        .with_state(state);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "webhook accept failed");
                continue;
            }
        };
        let acceptor = acceptor.read().unwrap_or_else(|e| e.into_inner()).clone();
        let app = app.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, req).await }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

/// Replaces the certificate (and the CA the configurations carry) at two thirds of its life.
async fn rotate(
    opts: WebhookOptions,
    acceptor: Arc<std::sync::RwLock<tokio_rustls::TlsAcceptor>>,
    ca: Arc<std::sync::RwLock<String>>,
    mut created: Instant,
) {
    loop {
        let due = CERT_LIFETIME * 2 / 3;
        tokio::time::sleep(due.saturating_sub(created.elapsed())).await;
        match generate_certificates(&opts).and_then(|c| Ok((tls_config(&c)?, c))) {
            Ok((config, certs)) => {
                // The new CA goes into the configurations first, then the server uses the new
                // certificate: the API server trusts both for one check interval.
                let both = format!(
                    "{}{}",
                    certs.ca_pem,
                    ca.read().unwrap_or_else(|e| e.into_inner())
                );
                *ca.write().unwrap_or_else(|e| e.into_inner()) = both;
                tokio::time::sleep(CA_BUNDLE_INTERVAL * 2).await;
                *acceptor.write().unwrap_or_else(|e| e.into_inner()) =
                    tokio_rustls::TlsAcceptor::from(Arc::new(config));
                *ca.write().unwrap_or_else(|e| e.into_inner()) = certs.ca_pem.clone();
                created = certs.created;
                tracing::info!("webhook certificate rotated");
            }
            Err(e) => {
                tracing::error!(error = %e, "rotating the webhook certificate failed; retrying in 60s");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

/// Every few seconds: sets our CA as the `caBundle` of each webhook (injection and
/// validation, revision tags included) whose Service is ours.
async fn keep_ca_bundles(
    opts: WebhookOptions,
    client: kube::Client,
    ca: Arc<std::sync::RwLock<String>>,
) {
    let service = opts.service();
    let ns = opts.system_namespace.clone();
    loop {
        let bundle = ca.read().unwrap_or_else(|e| e.into_inner()).clone();
        let bundle = ByteString(bundle.into_bytes());
        let ours = |c: &WebhookClientConfig| {
            c.service
                .as_ref()
                .is_some_and(|s| s.name == service && s.namespace == ns)
        };
        let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        set_ca_bundles(&mutating, &bundle, &ours, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        })
        .await;
        let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        set_ca_bundles(&validating, &bundle, &ours, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|h| &mut h.client_config)
                .collect()
        })
        .await;
        tokio::time::sleep(CA_BUNDLE_INTERVAL).await;
    }
}

/// Sets `bundle` in each client config of each configuration (`client_configs` picks them)
/// that `ours` says calls our Service, and writes back the configurations that changed.
async fn set_ca_bundles<K>(
    api: &Api<K>,
    bundle: &ByteString,
    ours: &(dyn Fn(&WebhookClientConfig) -> bool + Sync),
    client_configs: fn(&mut K) -> Vec<&mut WebhookClientConfig>,
) where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Ok(list) = api.list(&Default::default()).await else {
        return;
    };
    for mut config in list.items {
        let mut changed = false;
        for c in client_configs(&mut config) {
            if ours(c) && c.ca_bundle.as_ref() != Some(bundle) {
                c.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            replace(api, config).await;
        }
    }
}

async fn replace<K>(api: &Api<K>, config: K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = config.meta().name.clone().unwrap_or_default();
    match api.replace(&name, &PostParams::default(), &config).await {
        Ok(_) => tracing::info!(webhook_configuration = %name, "caBundle set"),
        // A conflict means someone else changed it: the next round sees the new version.
        Err(e) => {
            tracing::warn!(webhook_configuration = %name, error = %e, "setting caBundle; retrying")
        }
    }
}

fn review(response: AdmissionResponse) -> axum::response::Response {
    Json(response.into_review()).into_response()
}

fn bad_review(message: String) -> axum::response::Response {
    (http::StatusCode::BAD_REQUEST, message).into_response()
}

async fn inject_handler(
    State(state): State<WebhookState>,
    Json(body): Json<AdmissionReview<DynamicObject>>,
) -> axum::response::Response {
    state
        .metrics
        .injection_requests
        .fetch_add(1, Ordering::Relaxed);
    let req: AdmissionRequest<DynamicObject> = match body.try_into() {
        Ok(r) => r,
        Err(e) => {
            state
                .metrics
                .injection_failure
                .fetch_add(1, Ordering::Relaxed);
            return bad_review(format!("not an AdmissionReview request: {e}"));
        }
    };
    let response = AdmissionResponse::from(&req);
    let Some(object) = &req.object else {
        return review(response);
    };
    let pod = serde_json::to_value(object).unwrap_or(Value::Null);
    let namespace = req.namespace.clone().unwrap_or_else(|| "default".into());
    let injector = match state.injector().await {
        Ok(i) => i,
        Err(e) => {
            state
                .metrics
                .injection_failure
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "injection refused: the injector config is unreadable");
            return review(response.deny(e));
        }
    };
    let name = pod["metadata"]["name"]
        .as_str()
        .or(pod["metadata"]["generateName"].as_str())
        .unwrap_or_default()
        .to_string();
    match inject::decide(&injector, &namespace, &pod["metadata"], &pod["spec"]) {
        Decision::Skip(why) => {
            state.metrics.injection_skip.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(pod = %format!("{namespace}/{name}"), reason = %why, "not injected");
            review(response)
        }
        Decision::Inject => match inject::inject(&injector, &pod) {
            Ok(injected) => {
                let patch = json_patch::diff(&pod, &injected);
                match response.with_patch(patch) {
                    Ok(r) => {
                        state
                            .metrics
                            .injection_success
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::info!(pod = %format!("{namespace}/{name}"), "injected");
                        review(r)
                    }
                    Err(e) => {
                        state
                            .metrics
                            .injection_failure
                            .fetch_add(1, Ordering::Relaxed);
                        review(
                            AdmissionResponse::from(&req).deny(format!("encoding the patch: {e}")),
                        )
                    }
                }
            }
            Err(e) => {
                state
                    .metrics
                    .injection_failure
                    .fetch_add(1, Ordering::Relaxed);
                review(response.deny(format!("injection failed: {e}")))
            }
        },
    }
}

async fn validate_handler(
    State(state): State<WebhookState>,
    Json(body): Json<AdmissionReview<DynamicObject>>,
) -> axum::response::Response {
    let req: AdmissionRequest<DynamicObject> = match body.try_into() {
        Ok(r) => r,
        Err(e) => return bad_review(format!("not an AdmissionReview request: {e}")),
    };
    let response = AdmissionResponse::from(&req);
    let kind = req.kind.kind.as_str();
    let (Some(object), Operation::Create | Operation::Update) = (&req.object, &req.operation)
    else {
        return review(response);
    };
    if !ConfigKind::ALL.iter().any(|k| k.as_str() == kind) {
        // Kinds navarch does not read (AuthorizationPolicy, Telemetry, ...) are admitted.
        return review(response);
    }
    let mut doc = serde_json::to_value(object).unwrap_or(Value::Null);
    doc["apiVersion"] = format!("{}/{}", req.kind.group, req.kind.version).into();
    doc["kind"] = kind.into();
    let origin = Origin {
        source: "admission".into(),
        document: None,
    };
    let errors = document_errors(&origin, doc);
    if errors.is_empty() {
        state
            .metrics
            .validation_passed
            .fetch_add(1, Ordering::Relaxed);
        return review(response);
    }
    state
        .metrics
        .validation_failed
        .fetch_add(1, Ordering::Relaxed);
    let message = errors
        .iter()
        .map(|e| match &e.field {
            Some(f) => format!("{f}: {}", e.message),
            None => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    review(response.deny(format!("configuration is invalid: {message}")))
}
