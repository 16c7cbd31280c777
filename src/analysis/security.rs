//! Analyzers of the security.istio.io and telemetry.istio.io kinds (which the server does not
//! serve yet), as istioctl's: AuthorizationPolicies that select no workload (IST0127) or name
//! a namespace that does not exist (IST0101), RequestAuthentications without
//! `BLOCKED_CIDRS_IN_JWKS_URIS` on istiod (IST0175), and Telemetry selectors (IST0101,
//! IST0159, IST0160).
//!
//! Reads [`Objects`](super::objects::Objects) and the mesh config; reports through [`Context`].

use std::collections::{BTreeMap, BTreeSet};

use super::objects::selector_string;
use super::{Context, Message, go_list, messages};
use crate::model::registry::labels_match;

/// Pod labels by namespace, of the pods in the mesh (or in ambient mode).
fn mesh_pod_labels<'a>(cx: &'a Context) -> BTreeMap<&'a str, Vec<&'a BTreeMap<String, String>>> {
    let mut out: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for pod in &cx.objects.pods {
        let list = out.entry(pod.raw.resource.namespace.as_str()).or_default();
        let ambient = pod
            .raw
            .annotations
            .get("ambient.istio.io/redirection")
            .is_some_and(|v| v == "enabled");
        if super::workloads::pod_in_mesh(cx, pod) || ambient {
            list.push(&pod.raw.labels);
        }
    }
    out
}

/// IST0127 and IST0101 `namespace`, as istioctl's authorization policy analyzer.
pub fn authorization_policies(cx: &Context, out: &mut Vec<Message>) {
    let pods = mesh_pod_labels(cx);
    let root = cx.store.mesh.root_namespace.as_str();
    for ap in &cx.objects.authorization_policies {
        let ns = ap.raw.resource.namespace.as_str();
        let selector = ap.spec.selector.as_ref().map(|s| &s.match_labels);
        let matches_in = |labels: &[&BTreeMap<String, String>], sel: &BTreeMap<String, String>| {
            labels.iter().any(|l| labels_match(sel, l))
        };
        let no_workload = match selector {
            // Mesh-wide: a selector must match a pod somewhere; none applies to all.
            Some(sel) if ns == root => !pods.values().any(|l| matches_in(l, sel)),
            None if ns == root => false,
            None => pods.get(ns).is_none_or(Vec::is_empty),
            Some(sel) => !pods.get(ns).is_some_and(|l| matches_in(l, sel)),
        };
        if no_workload {
            out.push(cx.raw_message(
                &messages::NO_MATCHING_WORKLOADS_FOUND,
                &ap.raw,
                vec![selector.map(selector_string).unwrap_or_default()],
            ));
        }
        for rule in &ap.spec.rules {
            for from in &rule.from {
                for exp in from
                    .source
                    .namespaces
                    .iter()
                    .chain(&from.source.not_namespaces)
                {
                    let found = cx
                        .objects
                        .namespaces
                        .iter()
                        .any(|n| namespace_match(&n.raw.resource.name, exp));
                    if !found {
                        out.push(cx.raw_message(
                            &messages::REFERENCED_RESOURCE_NOT_FOUND,
                            &ap.raw,
                            vec!["namespace".into(), exp.clone()],
                        ));
                    }
                }
            }
        }
    }
}

/// An AuthorizationPolicy's namespace pattern: `*`, `*suffix`, `prefix*` or a name (any case).
fn namespace_match(ns: &str, exp: &str) -> bool {
    if exp == "*" {
        true
    } else if let Some(suffix) = exp.strip_prefix('*') {
        ns.ends_with(suffix)
    } else if let Some(prefix) = exp.strip_suffix('*') {
        ns.starts_with(prefix)
    } else {
        ns.eq_ignore_ascii_case(exp)
    }
}

/// IST0175: RequestAuthentications exist but an istiod Deployment (`app: istiod`) sets no
/// `BLOCKED_CIDRS_IN_JWKS_URIS`, so JWKS URIs may point anywhere.
pub fn blocked_cidrs(cx: &Context, out: &mut Vec<Message>) {
    let names: Vec<String> = cx
        .objects
        .request_authentications
        .iter()
        .map(|r| r.raw.full_name())
        .collect();
    if names.is_empty() {
        return;
    }
    const SHOWN: usize = 5;
    let listed = if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{}, and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    };
    for d in &cx.objects.deployments {
        if d.raw.labels.get("app").is_none_or(|a| a != "istiod") {
            continue;
        }
        let configured = d
            .spec
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .is_some_and(|s| {
                s.containers
                    .iter()
                    .flat_map(|c| c.env.iter().flatten())
                    .any(|e| {
                        e.name == "BLOCKED_CIDRS_IN_JWKS_URIS"
                            && e.value.as_deref().is_some_and(|v| !v.is_empty())
                    })
            });
        if !configured {
            out.push(cx.raw_message(
                &messages::JWKS_URI_FETCH_UNRESTRICTED,
                &d.raw,
                vec![names.len().to_string(), listed.clone()],
            ));
        }
    }
}

/// IST0101 `selector` (a Telemetry whose selector no pod of its namespace satisfies),
/// IST0159 (two select one pod) and IST0160 (two without a selector in a namespace), as
/// istioctl's telemetry analyzers.
pub fn telemetry_selectors(cx: &Context, out: &mut Vec<Message>) {
    let mut by_pod: BTreeMap<(&str, &str), Vec<&super::objects::Object<_>>> = BTreeMap::new();
    let mut unselected: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for t in &cx.objects.telemetries {
        let ns = t.raw.resource.namespace.as_str();
        let Some(sel) = &t.spec.selector else {
            unselected.entry(ns).or_default().push(t);
            continue;
        };
        if sel.match_labels.is_empty() {
            continue;
        }
        let mut found = false;
        for pod in cx
            .objects
            .pods
            .iter()
            .filter(|p| p.raw.resource.namespace == ns)
        {
            if labels_match(&sel.match_labels, &pod.raw.labels) {
                found = true;
                by_pod
                    .entry((ns, pod.raw.resource.name.as_str()))
                    .or_default()
                    .push(t);
            }
        }
        if !found {
            out.push(cx.raw_message(
                &messages::REFERENCED_RESOURCE_NOT_FOUND,
                &t.raw,
                vec!["selector".into(), selector_string(&sel.match_labels)],
            ));
        }
    }
    let mut reported = BTreeSet::new();
    for ((ns, pod), list) in by_pod.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = go_list(list.iter().map(|t| &t.raw.resource.name));
        for t in list {
            if reported.insert((t.raw.full_name(), pod)) {
                out.push(cx.raw_message(
                    &messages::CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS,
                    &t.raw,
                    vec![names.clone(), ns.to_string(), pod.to_string()],
                ));
            }
        }
    }
    for (ns, list) in unselected.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = go_list(list.iter().map(|t| &t.raw.resource.name));
        for t in list {
            out.push(cx.raw_message(
                &messages::MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS,
                &t.raw,
                vec![names.clone(), ns.to_string()],
            ));
        }
    }
}

/// IST0149: a VirtualService routes on a JWT claim (`@request.auth.claims.` headers) through a
/// Gateway whose pods no RequestAuthentication (of their namespace or istio-system) selects.
pub fn jwt_claim_routes(cx: &Context, out: &mut Vec<Message>) {
    const CLAIM: &str = "@request.auth.claims";
    for vs in &cx.store.virtual_services {
        let key = vs
            .spec
            .http
            .iter()
            .flat_map(|r| &r.r#match)
            .flat_map(|m| m.headers.keys().chain(m.without_headers.keys()))
            .find(|k| k.starts_with(CLAIM));
        let Some(key) = key else { continue };
        for gw_name in vs.spec.gateways.iter().filter(|g| *g != "mesh") {
            let (gw_ns, gw_short, Some(gw)) = super::referenced_gateway(cx.store, vs, gw_name)
            else {
                continue;
            };
            for pod in cx
                .objects
                .pods
                .iter()
                .filter(|p| labels_match(&gw.spec.selector, &p.raw.labels))
            {
                let authenticated = cx.objects.request_authentications.iter().any(|ra| {
                    let ns = ra.raw.resource.namespace.as_str();
                    (ns == "istio-system" || ns == pod.raw.resource.namespace)
                        && ra
                            .spec
                            .selector
                            .as_ref()
                            .is_none_or(|s| labels_match(&s.match_labels, &pod.raw.labels))
                });
                if !authenticated {
                    out.push(super::message(
                        &messages::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTH_N,
                        vs,
                        cx.locations,
                        vec![
                            key.clone(),
                            format!("{gw_ns}/{gw_short}"),
                            pod.raw.resource.name.clone(),
                        ],
                    ));
                }
            }
        }
    }
}
