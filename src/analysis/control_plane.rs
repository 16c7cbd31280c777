//! Analyzers of the control plane's own objects, as istioctl's: injection webhooks that
//! overlap or name a Service that does not exist (IST0139), webhook addresses of an external
//! control plane (IST0163, IST0164), and negative status conditions (IST0171).
//!
//! Reads [`Objects`](super::objects::Objects); reports through [`Context`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::admissionregistration::v1::WebhookClientConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as KubeSelector;

use super::objects::{RawObject, label_selector};
use super::{Context, Message, messages};

const REVISION_LABEL: &str = "istio.io/rev";

/// The revisions a webhook configuration serves: its `istio.io/rev` label and the values its
/// selectors require of `istio.io/rev`.
fn revisions(raw: &RawObject, selectors: &[Option<&KubeSelector>]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = raw
        .labels
        .get(REVISION_LABEL)
        .cloned()
        .into_iter()
        .collect();
    for s in selectors.iter().flatten() {
        out.extend(
            s.match_labels
                .iter()
                .flatten()
                .filter(|(k, _)| *k == REVISION_LABEL)
                .map(|(_, v)| v.clone()),
        );
        for e in s
            .match_expressions
            .iter()
            .flatten()
            .filter(|e| e.key == REVISION_LABEL)
        {
            out.extend(e.values.iter().flatten().cloned());
        }
    }
    out
}

/// IST0139, as istioctl's webhook analyzer: for each combination of the namespace and object
/// labels injection looks at (none, enabled, disabled, each revision), at most one Istio
/// injection webhook may match; and each names a Service that exists.
pub fn webhooks(cx: &Context, out: &mut Vec<Message>) {
    // `config/webhook` → (raw, namespaceSelector, objectSelector, clientConfig)
    let mut hooks = BTreeMap::new();
    let mut all_revisions = BTreeSet::new();
    for w in &cx.objects.mutating_webhooks {
        let list = w.spec.webhooks.as_deref().unwrap_or_default();
        let selectors: Vec<_> = list
            .iter()
            .flat_map(|h| [h.namespace_selector.as_ref(), h.object_selector.as_ref()])
            .collect();
        let revs = revisions(&w.raw, &selectors);
        if revs.is_empty() && !list.iter().any(|h| h.name.ends_with("istio.io")) {
            continue;
        }
        all_revisions.extend(revs);
        for h in list {
            hooks.insert(
                format!("{}/{}", w.raw.full_name(), h.name),
                (
                    &w.raw,
                    h.namespace_selector.as_ref(),
                    h.object_selector.as_ref(),
                    &h.client_config,
                ),
            );
        }
    }
    let combos = |key: &str, enabled: &str, disabled: &str| {
        let mut sets: Vec<BTreeMap<String, String>> = vec![
            BTreeMap::new(),
            [(key.to_string(), enabled.to_string())].into(),
            [(key.to_string(), disabled.to_string())].into(),
        ];
        for rev in &all_revisions {
            for mut base in sets.clone().into_iter().take(3) {
                base.insert(REVISION_LABEL.into(), rev.clone());
                sets.push(base);
            }
        }
        sets
    };
    let namespace_sets = combos("istio-injection", "enabled", "disabled");
    let object_sets = combos("sidecar.istio.io/inject", "true", "false");
    let matches = |s: Option<&KubeSelector>, labels: &BTreeMap<String, String>| {
        s.is_none() || label_selector(s).is_some_and(|s| s.matches(labels))
    };
    let mut reported = BTreeSet::new();
    for nl in &namespace_sets {
        for ol in &object_sets {
            let matched: BTreeSet<&String> = hooks
                .iter()
                .filter(|(_, (_, ns, obj, _))| matches(*ns, nl) && matches(*obj, ol))
                .map(|(name, _)| name)
                .collect();
            if matched.len() < 2 {
                continue;
            }
            for m in &matched {
                let others: Vec<&str> = matched
                    .iter()
                    .filter(|o| o != &m)
                    .map(|o| o.as_str())
                    .collect();
                let text = format!(
                    "Webhook overlaps with others: [{}]. This may cause injection to occur twice.",
                    others.join(" ")
                );
                if reported.insert((m.to_string(), text.clone())) {
                    out.push(cx.raw_message(&messages::INVALID_WEBHOOK, hooks[*m].0, vec![text]));
                }
            }
        }
    }
    for (raw, _, _, client) in hooks.values() {
        if let Some(svc) = &client.service
            && !cx.objects.service_exists(&svc.namespace, &svc.name)
        {
            out.push(cx.raw_message(
                &messages::INVALID_WEBHOOK,
                raw,
                vec![format!(
                    "Injector refers to a control plane service that does not exist: {}/{}.",
                    svc.namespace, svc.name
                )],
            ));
        }
    }
}

/// IST0163 / IST0164, as istioctl's external control plane analyzer: Istio's validating
/// (`istiod-default-validator`, `istio-validator*`) and injection (`istio-sidecar-injector*`)
/// webhooks reach their control plane by a URL with a host name, or by a Service.
pub fn external_control_plane(cx: &Context, out: &mut Vec<Message>) {
    let mut check = |raw: &RawObject, hook: &str, client: &WebhookClientConfig| {
        if let Some(url) = &client.url {
            match url.parse::<http::Uri>() {
                Err(_) => out.push(cx.raw_message(
                    &messages::INVALID_EXTERNAL_CONTROL_PLANE_CONFIG,
                    raw,
                    vec![
                        url.clone(),
                        hook.into(),
                        "was provided in an invalid format".into(),
                    ],
                )),
                Ok(u) => {
                    let host = u.host().unwrap_or_default();
                    let host = host.trim_start_matches('[').trim_end_matches(']');
                    if host.parse::<IpAddr>().is_ok() {
                        out.push(cx.raw_message(
                            &messages::EXTERNAL_CONTROL_PLANE_ADDRESS_IS_NOT_A_HOSTNAME,
                            raw,
                            vec![url.clone(), hook.into()],
                        ));
                    }
                }
            }
        } else if client.service.is_none() {
            out.push(cx.raw_message(
                &messages::INVALID_EXTERNAL_CONTROL_PLANE_CONFIG,
                raw,
                vec![String::new(), hook.into(), "is blank".into()],
            ));
        }
    };
    for w in &cx.objects.validating_webhooks {
        let name = &w.raw.resource.name;
        if name == "istiod-default-validator" || name.starts_with("istio-validator") {
            for h in w.spec.webhooks.iter().flatten() {
                check(&w.raw, &h.name, &h.client_config);
            }
        }
    }
    for w in &cx.objects.mutating_webhooks {
        if w.raw.resource.name.starts_with("istio-sidecar-injector") {
            for h in w.spec.webhooks.iter().flatten() {
                check(&w.raw, &h.name, &h.client_config);
            }
        }
    }
}

/// IST0171, as istioctl's condition analyzer: the negative conditions of Services,
/// ServiceEntries, WorkloadEntries, AuthorizationPolicies and Gateway API objects.
pub fn negative_conditions(cx: &Context, out: &mut Vec<Message>) {
    for raw in &cx.objects.all {
        let negative: &[&str] = match (raw.group(), raw.resource.kind.as_str()) {
            ("", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("networking.istio.io", "WorkloadEntry") => &["istio.io/WaypointBound"],
            ("security.istio.io", "AuthorizationPolicy") => {
                &["ZtunnelAccepted", "WaypointAccepted"]
            }
            ("gateway.networking.k8s.io", "Gateway" | "HTTPRoute" | "GRPCRoute") => {
                &["Accepted", "Programmed", "ResolvedRefs"]
            }
            _ => continue,
        };
        let status = &raw.value["status"];
        let conditions: Vec<&serde_json::Value> = match raw.resource.kind.as_str() {
            "HTTPRoute" | "GRPCRoute" => status["parents"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|p| p["conditions"].as_array().into_iter().flatten())
                .collect(),
            _ => status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .collect(),
        };
        for c in conditions {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            let kind = s("type");
            let partially_invalid = raw.resource.kind == "AuthorizationPolicy"
                && kind == "WaypointAccepted"
                && s("reason") == "PartiallyInvalid";
            let reported = negative.contains(&kind.as_str()) && s("status") == "False";
            // istioctl reports a partially invalid waypoint policy once more, on its own rule.
            for _ in 0..(usize::from(reported) + usize::from(partially_invalid)) {
                out.push(cx.raw_message(
                    &messages::NEGATIVE_CONDITION_STATUS,
                    raw,
                    vec![kind.clone(), s("reason"), s("message")],
                ));
            }
        }
    }
}
