//! Writes what navarch found wrong with each Istio resource into its
//! `status.validationMessages`, as istiod's analysis does, so `kubectl get -o yaml` shows it.
//! Only the replica holding the Lease writes (see [`super::leader`]).
//!
//! Owns the mapping from `ConfigError`s to Istio's `AnalysisMessageBase` entries (with the
//! error's text in an extra `message` field, on purpose: Istio's entries carry only the code)
//! and the status patches. Writes only when the status differs, so it settles after one round.

use std::sync::Arc;

use kube::Client;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{SOURCE_NAME, Stores};
use crate::model::config::ConfigError;

/// The Istio analysis code for an error: IST0101 for references to missing resources, else
/// IST0106 (schema validation).
fn code_of(error: &ConfigError) -> (&'static str, &'static str) {
    if error.message.contains("IST0101") {
        ("IST0101", "ReferencedResourceNotFound")
    } else {
        ("IST0106", "SchemaValidationError")
    }
}

/// The `validationMessages` for one object (empty when it has no errors).
pub fn validation_messages(errors: &[ConfigError], kind: &str, ns: &str, name: &str) -> Vec<Value> {
    errors
        .iter()
        .filter(|e| {
            e.source == SOURCE_NAME
                && e.kind.as_deref() == Some(kind)
                && e.namespace.as_deref() == Some(ns)
                && e.name.as_deref() == Some(name)
        })
        .map(|e| {
            let (code, type_name) = code_of(e);
            let message = match &e.field {
                Some(f) => format!("field {f}: {}", e.message),
                None => e.message.clone(),
            };
            json!({
                "type": {"code": code, "name": type_name},
                "level": "ERROR",
                "documentationUrl": format!(
                    "https://istio.io/v1.24/docs/reference/config/analysis/{}/",
                    code.to_lowercase()
                ),
                "message": message,
            })
        })
        .collect()
}

/// Keeps every Istio object's status in line with `errors` while `leader` says we lead.
pub(super) async fn run(
    client: Client,
    stores: Arc<Stores>,
    mut errors: watch::Receiver<Vec<ConfigError>>,
    mut leader: watch::Receiver<bool>,
) {
    loop {
        if *leader.borrow_and_update() {
            let current = errors.borrow_and_update().clone();
            write_all(&client, &stores, &current).await;
        }
        tokio::select! {
            r = errors.changed() => if r.is_err() { return },
            r = leader.changed() => if r.is_err() { return },
        }
    }
}

async fn write_all(client: &Client, stores: &Stores, errors: &[ConfigError]) {
    let kinds: Vec<_> = stores
        .istio
        .lock()
        .expect("istio stores lock")
        .iter()
        .map(|k| (k.resource.clone(), k.store.clone()))
        .collect();
    for (resource, store) in kinds {
        for obj in store.state() {
            let (ns, name) = (obj.namespace().unwrap_or_default(), obj.name_any());
            let want = validation_messages(errors, &resource.kind, &ns, &name);
            let have = obj
                .data
                .get("status")
                .and_then(|s| s.get("validationMessages"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if want == have {
                continue;
            }
            let patch = json!({"status": {
                "validationMessages": if want.is_empty() { Value::Null } else { Value::Array(want) },
                "observedGeneration": obj.metadata.generation,
            }});
            let api = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &resource);
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => tracing::debug!(kind = %resource.kind, %ns, %name, "status written"),
                Err(error) => {
                    tracing::warn!(kind = %resource.kind, %ns, %name, %error, "writing status failed; retried on the next change")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_istio_codes_and_the_field() {
        let err = |message: &str| ConfigError {
            source: SOURCE_NAME.into(),
            document: None,
            kind: Some("VirtualService".into()),
            namespace: Some("ns".into()),
            name: Some("vs".into()),
            field: Some("spec.http[0].route".into()),
            message: message.into(),
            missing: None,
        };
        let errors = vec![
            err("weights sum to 90, not 100"),
            err("subset \"v3\" ... (IST0101); add it"),
            ConfigError {
                source: "file.yaml".into(),
                ..err("from a file: not written to the cluster")
            },
        ];
        let m = validation_messages(&errors, "VirtualService", "ns", "vs");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0]["type"]["code"], "IST0106");
        assert_eq!(
            m[0]["message"],
            "field spec.http[0].route: weights sum to 90, not 100"
        );
        assert_eq!(m[1]["type"]["code"], "IST0101");
        assert!(validation_messages(&errors, "VirtualService", "ns", "other").is_empty());
    }
}
