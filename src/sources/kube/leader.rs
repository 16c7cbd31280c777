//! Leader election on a `coordination.k8s.io/v1` Lease, so that singleton work (writing status
//! to Istio resources) runs on one replica at a time, as istiod's leader elections do.
//!
//! Owns only the Lease: acquire when absent or expired, renew while held, report leadership on a
//! watch channel. Timings follow client-go's defaults as istiod uses them: a lease of `ttl`,
//! renewed every `ttl / 4`; leadership is given up when a renewal fails.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::watch;

/// Which Lease, and who we are.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    pub namespace: String,
    /// The Lease's name (istiod's analysis writer uses `istio-analyze-leader`).
    pub name: String,
    /// This replica's identity (its pod or instance name).
    pub identity: String,
    /// How long a lease lasts without renewal (istiod: 30 s).
    pub ttl: Duration,
}

/// Errors of the elector itself (a failed renewal is not one: it only ends leadership).
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("nobody reads leadership any more")]
    Unobserved,
}

/// Gives up leadership when dropped: an elector that panics or is stopped no longer leads.
struct Resign(Arc<watch::Sender<bool>>);

impl Drop for Resign {
    fn drop(&mut self) {
        self.0.send_replace(false);
    }
}

/// Competes for the Lease for as long as it runs, saying on `leading` whether this replica
/// leads now. Returns only when nobody subscribes to `leading` any more.
pub async fn run(
    client: Client,
    opts: LeaseOptions,
    leading: Arc<watch::Sender<bool>>,
) -> Result<(), LeaderError> {
    let tx = Resign(leading);
    let api: Api<Lease> = Api::namespaced(client, &opts.namespace);
    loop {
        let now_leading = match acquire_or_renew(&api, &opts).await {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(lease = %opts.name, %error, "lease renewal failed; not leading until it succeeds");
                false
            }
        };
        if *tx.0.borrow() != now_leading {
            tracing::info!(lease = %opts.name, identity = %opts.identity, leading = now_leading, "leadership changed");
        }
        tx.0.send_replace(now_leading);
        if tx.0.is_closed() {
            return Err(LeaderError::Unobserved);
        }
        tokio::time::sleep(opts.ttl / 4).await;
    }
}

/// One round: true when this replica holds the Lease afterwards.
async fn acquire_or_renew(api: &Api<Lease>, opts: &LeaseOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let ttl_secs = i32::try_from(opts.ttl.as_secs().max(1)).unwrap_or(i32::MAX);
    let fresh = |transitions: i32, acquired: Option<Timestamp>, rv: Option<String>| -> Lease {
        serde_json::from_value(json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": opts.name, "namespace": opts.namespace, "resourceVersion": rv},
            "spec": {
                "holderIdentity": opts.identity,
                "leaseDurationSeconds": ttl_secs,
                "acquireTime": acquired.unwrap_or(now).to_string(),
                "renewTime": now.to_string(),
                "leaseTransitions": transitions,
            }
        }))
        .expect("a Lease from JSON")
    };
    let conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
    let Some(current) = api.get_opt(&opts.name).await? else {
        return match api
            .create(&PostParams::default(), &fresh(0, None, None))
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if conflict(&e) => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let rv = current.metadata.resource_version.clone();
    let transitions = spec.lease_transitions.unwrap_or(0);
    let replacement = if spec.holder_identity.as_deref() == Some(opts.identity.as_str()) {
        fresh(transitions, spec.acquire_time.map(|t| t.0), rv)
    } else {
        let duration =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(ttl_secs)));
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0 + duration < now);
        if spec.holder_identity.is_some() && !expired {
            return Ok(false);
        }
        fresh(transitions + 1, None, rv)
    };
    // The resourceVersion makes this a compare-and-swap: a racing replica gets a conflict.
    match api
        .replace(&opts.name, &PostParams::default(), &replacement)
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}
