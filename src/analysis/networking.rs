//! Analyzers of networking.istio.io objects beside the ones in [`super`], as istioctl's:
//! Gateways sharing a certificate (IST0138) or a selector, port and host (IST0145), Gateway
//! credentials that are missing (IST0101) or not a certificate (IST0161); VirtualServices that
//! reference an internal Gateway (IST0165) or route without a subset through a Gateway to a
//! host another one splits by subsets (IST0140); DestinationRules for hosts the mesh does not
//! have (IST0174) or with subsets no pod satisfies (IST0173); ServiceEntries that disagree on
//! a port's protocol (IST0177); EnvoyFilters with relative patches and no priority (IST0151,
//! IST0155).
//!
//! Reads the model's store and [`Objects`](super::objects::Objects); reports through
//! [`Context`].

use std::collections::{BTreeMap, BTreeSet};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::objects::selector_string;
use super::{Context, Message, find_service, message, messages};

use crate::model::istio::gateway::{Server, ServerTlsSettings};
use crate::model::registry::labels_match;

/// IST0138, as istioctl's certificate analyzer: two Gateways of a namespace (istiod scopes
/// gateways to their namespace) whose selectors overlap serve the same credential, or the same
/// certificate and key files.
pub fn duplicate_certificates(cx: &Context, out: &mut Vec<Message>) {
    let gateways = &cx.store.gateways;
    for gw in gateways {
        for other in gateways.iter().filter(|o| {
            o.meta.namespace == gw.meta.namespace
                && o.meta.name != gw.meta.name
                && (gw.spec.selector.is_empty()
                    || selector_subset(&gw.spec.selector, &o.spec.selector))
        }) {
            for a in gw.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
                for b in other.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
                    if same_certificate(a, b) {
                        out.push(message(
                            &messages::GATEWAY_DUPLICATE_CERTIFICATE,
                            gw,
                            cx.locations,
                            vec![super::go_list([
                                format!("{}/{}", gw.meta.namespace, gw.meta.name),
                                format!("{}/{}", other.meta.namespace, other.meta.name),
                            ])],
                        ));
                    }
                }
            }
        }
    }
}

/// Every key of `x` is in `y` with the same value.
fn selector_subset(x: &BTreeMap<String, String>, y: &BTreeMap<String, String>) -> bool {
    x.iter().all(|(k, v)| y.get(k) == Some(v))
}

fn same_certificate(a: &ServerTlsSettings, b: &ServerTlsSettings) -> bool {
    match (a.credential_name.is_empty(), b.credential_name.is_empty()) {
        (false, false) => a.credential_name == b.credential_name,
        (true, true) => {
            !a.server_certificate.is_empty()
                && a.server_certificate == b.server_certificate
                && !a.private_key.is_empty()
                && a.private_key == b.private_key
        }
        _ => false,
    }
}

/// IST0145, as istioctl's conflicting gateway analyzer: Gateways with the same selector (or
/// selectors one pod satisfies both of) serve the same port with a host in common (on the same
/// bind address).
pub fn conflicting_gateways(cx: &Context, out: &mut Vec<Message>) {
    let gateways = &cx.store.gateways;
    let both_select_a_pod = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
        cx.objects
            .pods
            .iter()
            .any(|p| labels_match(a, &p.raw.labels) && labels_match(b, &p.raw.labels))
    };
    for gw in gateways {
        let selector = selector_string(&gw.spec.selector);
        for server in &gw.spec.servers {
            let Some(port) = &server.port else { continue };
            let mut conflicting = BTreeSet::new();
            for other in gateways
                .iter()
                .filter(|o| !(o.meta.namespace == gw.meta.namespace && o.meta.name == gw.meta.name))
            {
                let other_selector = selector_string(&other.spec.selector);
                let same_workloads = other_selector == selector
                    || ((other_selector.contains(&selector) || selector.contains(&other_selector))
                        && both_select_a_pod(&gw.spec.selector, &other.spec.selector));
                if !same_workloads {
                    continue;
                }
                let clash = other
                    .spec
                    .servers
                    .iter()
                    .filter(|s| s.port.as_ref().is_some_and(|p| p.number == port.number))
                    .any(|s| hosts_overlap(server, s));
                if clash {
                    conflicting.insert(format!("{}/{}", other.meta.namespace, other.meta.name));
                }
            }
            if !conflicting.is_empty() {
                out.push(message(
                    &messages::CONFLICTING_GATEWAYS,
                    gw,
                    cx.locations,
                    vec![
                        conflicting.into_iter().collect::<Vec<_>>().join(","),
                        selector.clone(),
                        port.number.to_string(),
                        server.hosts.join(","),
                    ],
                ));
            }
        }
    }
}

/// istiod's duplicate check for gateway servers (`CheckDuplicates`): the same host string in
/// both, on the same bind address.
fn hosts_overlap(a: &Server, b: &Server) -> bool {
    a.bind == b.bind && a.hosts.iter().any(|h| b.hosts.contains(h))
}

/// IST0101 `credentialName` and IST0161, as istioctl's gateway secret analyzer: the Secret a
/// TLS server names (in the namespace of the gateway's pods) exists and holds a certificate.
pub fn gateway_credentials(cx: &Context, out: &mut Vec<Message>) {
    for gw in &cx.store.gateways {
        let Some(pod) = cx
            .objects
            .pods
            .iter()
            .find(|p| labels_match(&gw.spec.selector, &p.raw.labels))
        else {
            continue; // IST0101 `selector`, reported by `gateway_workloads`.
        };
        let ns = pod.raw.resource.namespace.as_str();
        for tls in gw.spec.servers.iter().filter_map(|s| s.tls.as_ref()) {
            let name = tls.credential_name.as_str();
            if name.is_empty() {
                continue;
            }
            // `namespace/name` names another namespace's Secret.
            let (secret_ns, secret_name) = name.split_once('/').unwrap_or((ns, name));
            let Some(secret) = cx.objects.secrets.iter().find(|s| {
                s.raw.resource.namespace == secret_ns && s.raw.resource.name == secret_name
            }) else {
                out.push(message(
                    &messages::REFERENCED_RESOURCE_NOT_FOUND,
                    gw,
                    cx.locations,
                    vec!["credentialName".into(), name.to_string()],
                ));
                continue;
            };
            if !holds_certificate(&secret.spec) {
                out.push(message(
                    &messages::INVALID_GATEWAY_CREDENTIAL,
                    gw,
                    cx.locations,
                    vec![gw.meta.name.clone(), ns.to_string()],
                ));
            }
        }
    }
}

/// Whether a Secret's `tls.crt` (or `cert`) is PEM with at least one DER certificate (a
/// SEQUENCE): what istiod can serve. (Expiry and chains are not checked here.)
fn holds_certificate(secret: &k8s_openapi::api::core::v1::Secret) -> bool {
    let field = |k: &str| -> Option<Vec<u8>> {
        if let Some(b) = secret.data.as_ref().and_then(|d| d.get(k)) {
            return Some(b.0.clone());
        }
        secret
            .string_data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|s| s.as_bytes().to_vec())
    };
    let Some(pem) = field("tls.crt").or_else(|| field("cert")) else {
        return false;
    };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).collect();
    !certs.is_empty()
        && certs.iter().all(|c| {
            c.as_ref()
                .is_ok_and(|d| d.first() == Some(&0x30) && d.len() > 64)
        })
}

/// IST0165: a VirtualService names a Gateway that the Gateway API implementation generates
/// (`~istio-autogenerated-k8s-gateway~` in its name). Read from the documents as given: the
/// model rejects such a name (IST0106, as Istio's validation does), and istioctl reports both.
pub fn internal_gateway_references(cx: &Context, out: &mut Vec<Message>) {
    let virtual_services = cx
        .objects
        .all
        .iter()
        .filter(|o| o.group() == "networking.istio.io" && o.resource.kind == "VirtualService");
    for vs in virtual_services {
        for g in vs.value["spec"]["gateways"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let Some(g) = g.as_str() else { continue };
            let name = g.split_once('/').map_or(g, |(_, n)| n);
            if name.contains("~istio-autogenerated-k8s-gateway~") {
                out.push(cx.raw_message(
                    &messages::REFERENCED_INTERNAL_GATEWAY,
                    vs,
                    vec![vs.full_name(), g.to_string()],
                ));
            }
        }
    }
}

/// IST0140, as istioctl's destination host analyzer: a VirtualService bound to gateways routes
/// to a host without a subset while another VirtualService for that host splits it by subsets
/// (which gateway requests then do not get).
pub fn ingress_route_rules(cx: &Context, out: &mut Vec<Message>) {
    // VirtualService → hosts it routes to by subset (only its own hosts).
    let split: Vec<(String, BTreeSet<&str>)> = cx
        .store
        .virtual_services
        .iter()
        .map(|vs| {
            let hosts = vs
                .spec
                .http
                .iter()
                .flat_map(|r| &r.route)
                .filter_map(|d| d.destination.as_ref())
                .filter(|d| !d.subset.is_empty() && vs.spec.hosts.contains(&d.host))
                .map(|d| d.host.as_str())
                .collect();
            (format!("{}/{}", vs.meta.namespace, vs.meta.name), hosts)
        })
        .filter(|(_, hosts): &(String, BTreeSet<&str>)| !hosts.is_empty())
        .collect();
    for vs in cx
        .store
        .virtual_services
        .iter()
        .filter(|v| !v.spec.gateways.is_empty())
    {
        for d in vs
            .spec
            .http
            .iter()
            .flat_map(|r| &r.route)
            .filter_map(|d| d.destination.as_ref())
            .filter(|d| d.subset.is_empty())
        {
            for (other, hosts) in &split {
                if hosts.contains(d.host.as_str()) {
                    out.push(message(
                        &messages::INGRESS_ROUTE_RULES_NOT_AFFECTED,
                        vs,
                        cx.locations,
                        vec![
                            other.clone(),
                            format!("{}/{}", vs.meta.namespace, vs.meta.name),
                        ],
                    ));
                }
            }
        }
    }
}

/// IST0174 (a DestinationRule whose host is no service of the mesh) and IST0173 (a subset
/// whose labels, with the service's selector, no pod satisfies), as istioctl's subset
/// analyzer.
pub fn destination_rule_hosts(cx: &Context, out: &mut Vec<Message>) {
    for dr in &cx.store.destination_rules {
        let Some(service) = find_service(cx.store, &dr.spec.host, &dr.meta.namespace) else {
            out.push(message(
                &messages::UNKNOWN_DESTINATION_RULE_HOST,
                dr,
                cx.locations,
                vec![dr.spec.host.clone()],
            ));
            continue;
        };
        for subset in &dr.spec.subsets {
            let mut selector = service.selector.clone().unwrap_or_default();
            selector.extend(subset.labels.clone());
            let selected = cx.objects.pods.iter().any(|p| {
                let mut labels = p.raw.labels.clone();
                if let Some(node) = p.spec.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    labels.insert("kubernetes.io/hostname".into(), node);
                }
                labels_match(&selector, &labels)
            });
            if !selected {
                out.push(message(
                    &messages::DESTINATION_RULE_SUBSET_NOT_SELECT_PODS,
                    dr,
                    cx.locations,
                    vec![subset.name.clone()],
                ));
            }
        }
    }
}

/// `(scope, host, port)`: where a ServiceEntry's port is visible.
type ScopedHostPort<'a> = (String, &'a str, u32);

/// IST0177, as istioctl's conflicting ServiceEntry analyzer: ServiceEntries visible in one
/// scope (exported to a namespace, or to all) define a host and port with different protocols.
pub fn conflicting_service_entry_protocols(cx: &Context, out: &mut Vec<Message>) {
    // (scope, host, port) → [(protocol, entry)]
    let mut index: BTreeMap<ScopedHostPort, Vec<(String, usize)>> = BTreeMap::new();
    let entries = &cx.store.service_entries;
    for (i, se) in entries.iter().enumerate() {
        let export = &se.spec.export_to;
        let scopes: BTreeSet<String> = if export.is_empty() || export.iter().any(|e| e == "*") {
            ["*".to_string()].into()
        } else {
            export
                .iter()
                .map(|e| {
                    if e == "." {
                        se.meta.namespace.clone()
                    } else {
                        e.clone()
                    }
                })
                .collect()
        };
        for scope in scopes {
            for h in &se.spec.hosts {
                for p in &se.spec.ports {
                    index
                        .entry((scope.clone(), h.as_str(), p.number))
                        .or_default()
                        .push((p.protocol.to_ascii_uppercase(), i));
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host, port), list) in &index {
        let mut list = list.clone();
        if scope != "*"
            && let Some(all) = index.get(&("*".to_string(), *host, *port))
        {
            list.extend(all.iter().cloned());
        }
        let protocols: BTreeSet<&str> = list.iter().map(|(p, _)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = list
            .iter()
            .map(|(_, i)| format!("{}/{}", entries[*i].meta.namespace, entries[*i].meta.name))
            .collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (_, i) in &list {
            if reported.insert(*i) {
                out.push(message(
                    &messages::CONFLICTING_SERVICE_ENTRY_PROTOCOL,
                    &entries[*i],
                    cx.locations,
                    vec![
                        names.clone(),
                        host.to_string(),
                        port.to_string(),
                        protocols.clone(),
                    ],
                ));
            }
        }
    }
}

/// IST0151 / IST0155, as istioctl's EnvoyFilter analyzer: a relative patch (INSERT_BEFORE,
/// INSERT_AFTER, and REPLACE or REMOVE where they apply) in an EnvoyFilter without a
/// priority; IST0155 when an earlier EnvoyFilter patched the same filter name for a
/// `proxyVersion`.
pub fn envoy_filter_relative_operations(cx: &Context, out: &mut Vec<Message>) {
    let mut versioned: Vec<String> = Vec::new();
    for ef in &cx.store.envoy_filters {
        let priority = ef.spec["priority"].as_i64().unwrap_or(0);
        for patch in ef.spec["configPatches"].as_array().into_iter().flatten() {
            if patch["patch"].is_null() {
                break;
            }
            let value = &patch["patch"]["value"];
            let name = value["name"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    (value.is_object())
                        .then(|| {
                            patch["match"]["listener"]["filterChain"]["filter"]["name"].as_str()
                        })
                        .flatten()
                        .map(str::to_string)
                })
                .unwrap_or_default();
            let apply_to = patch["applyTo"].as_str().unwrap_or_default();
            let route_level = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
            let relative = match patch["patch"]["operation"].as_str().unwrap_or_default() {
                "REMOVE" => !route_level,
                "REPLACE" => matches!(apply_to, "NETWORK_FILTER" | "HTTP_FILTER" | "VIRTUAL_HOST"),
                "INSERT_BEFORE" | "INSERT_AFTER" => true,
                _ => false,
            };
            if relative && priority == 0 {
                let kind = if versioned.contains(&name) {
                    &messages::ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION
                } else {
                    &messages::ENVOY_FILTER_USES_RELATIVE_OPERATION
                };
                out.push(message(kind, ef, cx.locations, vec![]));
            }
            if patch["match"]["proxy"]["proxyVersion"]
                .as_str()
                .is_some_and(|v| !v.is_empty())
            {
                versioned.push(name);
            }
        }
    }
}
