//! `navarch analyze`'s checks, as istioctl's analyzers: Istio's message codes, levels and texts
//! over a snapshot of objects. It reuses the model's own validation: a document the model
//! rejects is IST0106 with the model's words, and a reference the model refuses (a subset no
//! DestinationRule defines) is IST0101, so analyze, the server and status messages never
//! disagree.
//!
//! Pure: it reads a [`ConfigStore`] and where each object stands in its file
//! ([`Locations`]); loading files and printing is the CLI's (`cli::analyze`).

pub mod messages;
pub mod objects;

mod annotations;
mod control_plane;
mod networking;
mod security;
mod workloads;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::model::config::{Config, ConfigError};
use crate::model::host::Hostname;
use crate::model::istio::VirtualService;
use crate::model::push_context::{ConfigStore, resolve_short_name};
use crate::model::registry::{Protocol, Service, labels_match};
pub use messages::{Level, MessageType};
pub use objects::Objects;

/// The object a message is about, and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Resource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: &'static MessageType,
    /// `None` for a file that could not be read as objects at all.
    pub resource: Option<Resource>,
    /// `file:line` (istioctl's reference), when the object came from a file.
    pub reference: Option<String>,
    pub args: Vec<String>,
}

impl Message {
    pub fn text(&self) -> String {
        messages::render(self.kind.template, &self.args)
    }

    /// `Kind namespace/name` (istioctl's origin), or `Kind name` for cluster-scoped objects.
    pub fn origin(&self) -> String {
        match &self.resource {
            Some(r) if r.namespace.is_empty() => format!("{} {}", r.kind, r.name),
            Some(r) => format!("{} {}/{}", r.kind, r.namespace, r.name),
            None => String::new(),
        }
    }

    /// istioctl's JSON (and YAML) row.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "code": self.kind.code,
            "documentationUrl": format!(
                "https://istio.io/latest/docs/reference/config/analysis/{}/?ref=istioctl",
                self.kind.code.to_ascii_lowercase()
            ),
            "level": self.kind.level.as_str(),
            "message": self.text(),
            "origin": self.origin(),
            "reference": self.reference.clone().unwrap_or_default(),
        })
    }

    /// istioctl's line: `Error [IST0101] (VirtualService ns/name vs.yaml:3) Referenced ...`.
    pub fn log_line(&self) -> String {
        let place = [Some(self.origin()), self.reference.clone()]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} [{}] ({place}) {}",
            self.kind.level.as_str(),
            self.kind.code,
            self.text()
        )
    }
}

/// Where each object and each document stands in its file, for the `file:line` references.
#[derive(Debug, Default, Clone)]
pub struct Locations {
    /// `(kind, namespace, name)` → `file:line` of the document that holds it.
    pub objects: HashMap<(String, String, String), String>,
    /// `(file, document index)` → line the document starts on.
    pub documents: HashMap<(String, usize), usize>,
}

impl Locations {
    fn of(&self, kind: &str, namespace: &str, name: &str) -> Option<String> {
        self.objects
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn of_error(&self, e: &ConfigError) -> Option<String> {
        if let (Some(kind), Some(name)) = (&e.kind, &e.name)
            && let Some(r) = self.of(kind, e.namespace.as_deref().unwrap_or_default(), name)
        {
            return Some(r);
        }
        let line = e
            .document
            .and_then(|d| self.documents.get(&(e.source.clone(), d)))
            .copied()
            .unwrap_or(1);
        Some(format!("{}:{line}", e.source))
    }
}

/// Namespaces whose objects are the platform's, not the mesh user's (istioctl skips them).
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// What the analyzers read: the model's store (what the server would serve), every document
/// as given ([`Objects`]), and where each stands in its file.
pub struct Context<'a> {
    pub store: &'a ConfigStore,
    pub objects: &'a Objects,
    pub locations: &'a Locations,
}

impl Context<'_> {
    /// A message about an object the model does not type (or as it was given).
    fn raw_message(
        &self,
        kind: &'static MessageType,
        raw: &objects::RawObject,
        args: Vec<String>,
    ) -> Message {
        let r = &raw.resource;
        Message {
            kind,
            resource: Some(r.clone()),
            reference: self.locations.of(&r.kind, &r.namespace, &r.name),
            args,
        }
    }
}

/// Every message for `store` and `objects`, in a stable order (by origin, then code), each
/// once (istioctl prints a message two analyzers raise alike once).
pub fn analyze(store: &ConfigStore, objects: &Objects, locations: &Locations) -> Vec<Message> {
    let cx = Context {
        store,
        objects,
        locations,
    };
    let mut out = Vec::new();
    rejected_documents(store, locations, &mut out);
    unreadable_objects(&cx, &mut out);
    destination_hosts(store, locations, &mut out);
    gateway_references(store, locations, &mut out);
    conflicting_mesh_gateway_hosts(store, locations, &mut out);
    sidecars_without_selector(&cx, &mut out);
    sidecars_selecting_one_pod(&cx, &mut out);
    sidecar_selectors_without_pods(&cx, &mut out);
    unreachable_rules(store, locations, &mut out);
    service_entry_addresses(store, locations, &mut out);
    unverified_server_certificates(store, locations, &mut out);
    envoy_filter_operations(store, locations, &mut out);
    gateway_workloads(store, locations, &mut out);
    deprecated_fields(store, locations, &mut out);
    workloads::injection(&cx, &mut out);
    workloads::image_auto(&cx, &mut out);
    workloads::application_uid(&cx, &mut out);
    workloads::service_associations(&cx, &mut out);
    workloads::port_names(&cx, &mut out);
    security::authorization_policies(&cx, &mut out);
    security::blocked_cidrs(&cx, &mut out);
    security::telemetry_selectors(&cx, &mut out);
    security::jwt_claim_routes(&cx, &mut out);
    networking::duplicate_certificates(&cx, &mut out);
    networking::conflicting_gateways(&cx, &mut out);
    networking::gateway_credentials(&cx, &mut out);
    networking::internal_gateway_references(&cx, &mut out);
    networking::ingress_route_rules(&cx, &mut out);
    networking::destination_rule_hosts(&cx, &mut out);
    networking::conflicting_service_entry_protocols(&cx, &mut out);
    networking::envoy_filter_relative_operations(&cx, &mut out);
    control_plane::webhooks(&cx, &mut out);
    control_plane::external_control_plane(&cx, &mut out);
    control_plane::negative_conditions(&cx, &mut out);
    annotations::annotations(&cx, &mut out);
    out.sort_by(|a, b| {
        (a.resource.as_ref(), a.kind.code, &a.args, &a.reference).cmp(&(
            b.resource.as_ref(),
            b.kind.code,
            &b.args,
            &b.reference,
        ))
    });
    out.dedup();
    suppressed_by_annotation(objects, &mut out);
    out
}

/// The annotation on an object that hides its messages: a comma-separated list of codes, or
/// `*` for all of them.
const SUPPRESS_ANNOTATION: &str = "galley.istio.io/analyze-suppress";

/// Drops the messages an object's own `galley.istio.io/analyze-suppress` annotation names,
/// as istioctl does.
fn suppressed_by_annotation(objects: &Objects, out: &mut Vec<Message>) {
    let suppressed: HashMap<&Resource, Vec<&str>> = objects
        .all
        .iter()
        .filter_map(|o| {
            let codes = o.annotations.get(SUPPRESS_ANNOTATION)?;
            Some((&o.resource, codes.split(',').map(str::trim).collect()))
        })
        .collect();
    if suppressed.is_empty() {
        return;
    }
    out.retain(|m| {
        m.resource
            .as_ref()
            .and_then(|r| suppressed.get(r))
            .is_none_or(|codes| !codes.iter().any(|c| *c == "*" || *c == m.kind.code))
    });
}

/// IST0106 for a document of a kind only analysis reads (a Deployment, a webhook, a security
/// or telemetry kind) that does not deserialize.
fn unreadable_objects(cx: &Context, out: &mut Vec<Message>) {
    for (r, field, problem) in &cx.objects.errors {
        out.push(Message {
            kind: &messages::SCHEMA_VALIDATION_ERROR,
            resource: Some(r.clone()),
            reference: cx.locations.of(&r.kind, &r.namespace, &r.name),
            args: vec![format!("{field}: {problem}")],
        });
    }
}

/// The service of the mesh `host` (short names resolved in `namespace`) names: a Kubernetes
/// Service or ServiceEntry host, or one whose wildcard host covers it.
fn find_service<'a>(store: &'a ConfigStore, host: &str, namespace: &str) -> Option<&'a Service> {
    let fqdn = resolve_short_name(host, namespace);
    store.registry.services.get(&fqdn).or_else(|| {
        store
            .registry
            .services
            .values()
            .find(|s| Hostname::new(&fqdn).subset_of(s.hostname.as_str()))
    })
}

fn message<T>(
    kind: &'static MessageType,
    config: &Config<T>,
    locations: &Locations,
    args: Vec<String>,
) -> Message {
    let k = config.meta.kind.as_str();
    Message {
        kind,
        resource: Some(Resource {
            kind: k.to_string(),
            namespace: config.meta.namespace.clone(),
            name: config.meta.name.clone(),
        }),
        reference: locations.of(k, &config.meta.namespace, &config.meta.name),
        args,
    }
}

/// A list as Go's `%v` prints a slice: `[a b c]`.
fn go_list<T: std::fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", items.join(" "))
}

/// What the model refused: a reference to something missing is IST0101, anything else about
/// a document IST0106 (`field: message`); a file that does not parse is IST0106 without an
/// object.
fn rejected_documents(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for e in &store.errors {
        let resource = match (&e.kind, &e.name) {
            (Some(kind), Some(name)) => Some(Resource {
                kind: kind.clone(),
                namespace: e.namespace.clone().unwrap_or_default(),
                name: name.clone(),
            }),
            _ => None,
        };
        let (kind, args) = match &e.missing {
            Some(m) => (
                &messages::REFERENCED_RESOURCE_NOT_FOUND,
                vec![m.what.clone(), m.value.clone()],
            ),
            None => {
                let detail = match &e.field {
                    Some(f) => format!("{f}: {}", e.message),
                    None => e.message.clone(),
                };
                (&messages::SCHEMA_VALIDATION_ERROR, vec![detail])
            }
        };
        out.push(Message {
            kind,
            resource,
            reference: locations.of_error(e),
            args,
        });
    }
}

/// IST0101 `host` / `mirror host` / `host:port` and IST0112, as istioctl's destination host
/// analyzer: a destination that is no service of the mesh (Kubernetes Service or ServiceEntry
/// host, wildcards included), a port the service does not have, or no port towards a service
/// with several.
fn destination_hosts(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    use crate::model::istio::virtual_service::Destination;
    for vs in &store.virtual_services {
        let spec = &vs.spec;
        let routes = spec
            .http
            .iter()
            .flat_map(|r| &r.route)
            .filter_map(|d| d.destination.as_ref())
            .chain(
                spec.tcp
                    .iter()
                    .flat_map(|r| &r.route)
                    .filter_map(|d| d.destination.as_ref()),
            )
            .chain(
                spec.tls
                    .iter()
                    .flat_map(|r| &r.route)
                    .filter_map(|d| d.destination.as_ref()),
            )
            .map(|d| (d, "host"));
        let mirrors = spec
            .http
            .iter()
            .flat_map(|r| {
                r.mirror
                    .iter()
                    .chain(r.mirrors.iter().filter_map(|m| m.destination.as_ref()))
            })
            .map(|d| (d, "mirror host"));
        let mut reported = std::collections::BTreeSet::new();
        for (d, what) in routes.chain(mirrors) {
            let d: &Destination = d;
            let service = find_service(store, &d.host, &vs.meta.namespace);
            let (kind, args) = match (service, d.port.as_ref().filter(|p| p.number != 0)) {
                (None, _) => (
                    &messages::REFERENCED_RESOURCE_NOT_FOUND,
                    vec![what.to_string(), d.host.clone()],
                ),
                (Some(s), None) if s.ports.len() > 1 => (
                    &messages::VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED,
                    vec![d.host.clone(), go_list(s.ports.iter().map(|p| p.port))],
                ),
                (Some(s), Some(p)) if !s.ports.iter().any(|sp| u32::from(sp.port) == p.number) => (
                    &messages::REFERENCED_RESOURCE_NOT_FOUND,
                    vec!["host:port".into(), format!("{}:{}", d.host, p.number)],
                ),
                _ => continue,
            };
            if reported.insert((kind.code, args.clone())) {
                out.push(message(kind, vs, locations, args));
            }
        }
    }
}

/// IST0101 `gateway`: a VirtualService bound to a Gateway that does not exist (`mesh` is the
/// sidecars, not a Gateway).
fn gateway_references(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for vs in &store.virtual_services {
        for g in vs.spec.gateways.iter().filter(|g| *g != "mesh") {
            let (ns, name, gateway) = referenced_gateway(store, vs, g);
            if gateway.is_none() {
                out.push(message(
                    &messages::REFERENCED_RESOURCE_NOT_FOUND,
                    vs,
                    locations,
                    vec!["gateway".into(), g.clone()],
                ));
            } else if !hosts_in_gateway(store, &vs.spec.hosts, &vs.meta.namespace, ns, name) {
                out.push(message(
                    &messages::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                    vs,
                    locations,
                    vec![
                        go_list(&vs.spec.hosts),
                        format!("{}/{}", vs.meta.namespace, vs.meta.name),
                        format!("{ns}/{name}"),
                    ],
                ));
            }
        }
    }
}

/// A VirtualService's `gateways` entry `g` (`namespace/name`, or `name` in the
/// VirtualService's namespace): the namespace and name it names, and that Gateway if it
/// exists.
fn referenced_gateway<'a>(
    store: &'a ConfigStore,
    vs: &'a Config<VirtualService>,
    g: &'a str,
) -> (
    &'a str,
    &'a str,
    Option<&'a Config<crate::model::istio::Gateway>>,
) {
    let (ns, name) = g.split_once('/').unwrap_or((&vs.meta.namespace, g));
    let gateway = store
        .gateways
        .iter()
        .find(|gw| gw.meta.namespace == ns && gw.meta.name == name)
        .map(|gw| &**gw);
    (ns, name, gateway)
}

/// Whether some host of a VirtualService in `vs_namespace` is one a server of Gateway
/// `gw_ns/gw_name` offers to that namespace (`ns/host`, `./host` or `*/host`; wildcards
/// match).
fn hosts_in_gateway(
    store: &ConfigStore,
    hosts: &[String],
    vs_namespace: &str,
    gw_ns: &str,
    gw_name: &str,
) -> bool {
    store
        .gateways
        .iter()
        .filter(|g| g.meta.namespace == gw_ns && g.meta.name == gw_name)
        .flat_map(|g| g.spec.servers.iter().flat_map(|s| &s.hosts))
        .any(|server_host| {
            let (ns, host) = server_host.split_once('/').unwrap_or(("*", server_host));
            let offered = ns == "*" || ns == vs_namespace || (ns == "." && gw_ns == vs_namespace);
            offered && hosts.iter().any(|h| Hostname::new(h).matches(host))
        })
}

/// Whether a VirtualService applies to sidecars (no gateways, or `mesh` among them).
fn bound_to_mesh(vs: &VirtualService) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// IST0109: two VirtualServices for sidecars define the same host (in one namespace, as the
/// sidecars of that namespace see both).
fn conflicting_mesh_gateway_hosts(
    store: &ConfigStore,
    locations: &Locations,
    out: &mut Vec<Message>,
) {
    let mut by_host: BTreeMap<(String, String), Vec<&Config<VirtualService>>> = BTreeMap::new();
    for vs in store
        .virtual_services
        .iter()
        .filter(|v| bound_to_mesh(&v.spec))
    {
        for h in &vs.spec.hosts {
            let fqdn = resolve_short_name(h, &vs.meta.namespace);
            let entry = by_host
                .entry((vs.meta.namespace.clone(), fqdn))
                .or_default();
            if !entry.iter().any(|v| std::ptr::eq(*v, &**vs)) {
                entry.push(vs);
            }
        }
    }
    for ((_, host), list) in by_host.into_iter().filter(|(_, l)| l.len() > 1) {
        let names = list
            .iter()
            .map(|v| format!("{}/{}", v.meta.namespace, v.meta.name))
            .collect::<Vec<_>>()
            .join(",");
        for vs in list {
            out.push(message(
                &messages::CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS,
                vs,
                locations,
                vec![names.clone(), host.clone()],
            ));
        }
    }
}

/// Whether a pod is in ambient mode (ztunnel redirects it; a Sidecar has no effect on it).
fn ambient_pod(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .get("ambient.istio.io/redirection")
        .is_some_and(|v| v == "enabled")
}

/// The labels a Sidecar selects workloads by, `None` for a namespace-wide one (no selector,
/// or one without labels).
fn sidecar_selector(s: &Config<crate::model::istio::Sidecar>) -> Option<&BTreeMap<String, String>> {
    s.spec
        .workload_selector
        .as_ref()
        .map(|w| &w.labels)
        .filter(|l| !l.is_empty())
}

/// IST0101 `selector`: a Sidecar whose workload selector no pod of its namespace satisfies.
fn sidecar_selectors_without_pods(cx: &Context, out: &mut Vec<Message>) {
    for s in &cx.store.sidecars {
        let Some(labels) = sidecar_selector(s) else {
            continue;
        };
        let found = cx.objects.pods.iter().any(|p| {
            p.raw.resource.namespace == s.meta.namespace && labels_match(labels, &p.raw.labels)
        });
        if !found {
            out.push(message(
                &messages::REFERENCED_RESOURCE_NOT_FOUND,
                s,
                cx.locations,
                vec!["selector".into(), objects::selector_string(labels)],
            ));
        }
    }
}

/// IST0110: more than one Sidecar of a namespace selects the same pod; IST0167 instead for
/// Sidecars that select a pod in ambient mode.
fn sidecars_selecting_one_pod(cx: &Context, out: &mut Vec<Message>) {
    for pod in &cx.objects.pods {
        let ns = pod.raw.resource.namespace.as_str();
        let selecting: Vec<_> = cx
            .store
            .sidecars
            .iter()
            .filter(|s| {
                s.meta.namespace == ns
                    && sidecar_selector(s).is_some_and(|l| labels_match(l, &pod.raw.labels))
            })
            .collect();
        if ambient_pod(&pod.raw.annotations) {
            for s in selecting {
                out.push(message(
                    &messages::INEFFECTIVE_POLICY,
                    s,
                    cx.locations,
                    vec!["selected workload is in ambient mode, the policy has no impact".into()],
                ));
            }
            continue;
        }
        if selecting.len() < 2 {
            continue;
        }
        let names = go_list(selecting.iter().map(|s| &s.meta.name));
        for s in selecting {
            out.push(message(
                &messages::CONFLICTING_SIDECAR_WORKLOAD_SELECTORS,
                s,
                cx.locations,
                vec![names.clone(), ns.to_string(), pod.raw.resource.name.clone()],
            ));
        }
    }
}

/// IST0111: more than one Sidecar of a namespace without a workload selector; IST0167 instead
/// in a namespace in ambient mode (`istio.io/dataplane-mode: ambient` without sidecar
/// injection labels).
fn sidecars_without_selector(cx: &Context, out: &mut Vec<Message>) {
    let mut by_ns: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for s in cx
        .store
        .sidecars
        .iter()
        .filter(|s| sidecar_selector(s).is_none())
    {
        by_ns.entry(&s.meta.namespace).or_default().push(s);
    }
    for (ns, list) in by_ns {
        let ambient = cx.objects.namespace_labels(ns).is_some_and(|l| {
            l.get("istio-injection").is_none_or(|v| v != "enabled")
                && l.get("istio.io/rev").is_none_or(String::is_empty)
                && l.get("istio.io/dataplane-mode")
                    .is_some_and(|m| m == "ambient")
        });
        if ambient {
            for s in list {
                out.push(message(
                    &messages::INEFFECTIVE_POLICY,
                    s,
                    cx.locations,
                    vec!["namespace is in ambient mode, the policy has no impact".into()],
                ));
            }
            continue;
        }
        if list.len() < 2 {
            continue;
        }
        let names = go_list(list.iter().map(|s| &s.meta.name));
        for s in list {
            out.push(message(
                &messages::MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS,
                s,
                cx.locations,
                vec![names.clone(), ns.to_string()],
            ));
        }
    }
}

/// IST0130 / IST0131, as Istio's validation finds them: an HTTP rule without matches after
/// another one, a rule all of whose matches an earlier rule has, and each match an earlier
/// rule already has. Rules and matches are named by their `name`, else `#<index>`.
fn unreachable_rules(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for vs in &store.virtual_services {
        let rule_name = |i: usize| match vs.spec.http[i].name.as_str() {
            "" => format!("#{i}"),
            n => format!("{n:?}"),
        };
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut catch_all: Option<usize> = None;
        for (i, rule) in vs.spec.http.iter().enumerate() {
            if rule.r#match.is_empty() {
                if catch_all.is_some() {
                    out.push(message(
                        &messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                        vs,
                        locations,
                        vec![
                            rule_name(i),
                            "only the last rule can have no matches".into(),
                        ],
                    ));
                }
                catch_all = Some(i);
                continue;
            }
            let mut duplicates = 0;
            for (j, m) in rule.r#match.iter().enumerate() {
                // Compared without the match's own name, as Istio compares their JSON.
                let mut unnamed = m.clone();
                unnamed.name.clear();
                let key = serde_json::to_string(&unnamed).unwrap_or_default();
                match seen.get(&key) {
                    Some(&earlier) => {
                        duplicates += 1;
                        let match_name = match m.name.as_str() {
                            "" => format!("#{j}"),
                            n => format!("{n:?}"),
                        };
                        out.push(message(
                            &messages::VIRTUAL_SERVICE_INEFFECTIVE_MATCH,
                            vs,
                            locations,
                            vec![rule_name(i), match_name, rule_name(earlier)],
                        ));
                    }
                    None => {
                        seen.insert(key, i);
                    }
                }
            }
            if duplicates == rule.r#match.len() {
                out.push(message(
                    &messages::VIRTUAL_SERVICE_UNREACHABLE_RULE,
                    vs,
                    locations,
                    vec![rule_name(i), "all matches used by prior rules".into()],
                ));
            }
        }
    }
}

/// IST0134: a ServiceEntry without addresses with a TCP (or unset) protocol port: sidecars
/// cannot tell its traffic from other TCP traffic to the port.
fn service_entry_addresses(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for se in &store.service_entries {
        let tcp = se
            .spec
            .ports
            .iter()
            .any(|p| p.protocol.is_empty() || p.protocol.eq_ignore_ascii_case("TCP"));
        if se.spec.addresses.is_empty() && tcp {
            out.push(message(
                &messages::SERVICE_ENTRY_ADDRESSES_REQUIRED,
                se,
                locations,
                Vec::new(),
            ));
        }
    }
}

/// IST0128 / IST0129: TLS towards a destination (SIMPLE or MUTUAL, for the whole rule or a
/// port) with nothing to verify the server's certificate against.
fn unverified_server_certificates(
    store: &ConfigStore,
    locations: &Locations,
    out: &mut Vec<Message>,
) {
    use crate::model::istio::destination_rule::{ClientTlsMode, ClientTlsSettings};
    let unverified = |tls: Option<&ClientTlsSettings>| {
        tls.filter(|t| {
            matches!(t.mode, ClientTlsMode::Simple | ClientTlsMode::Mutual)
                && t.ca_certificates.is_empty()
                && t.credential_name.is_empty()
                && t.insecure_skip_verify != Some(true)
        })
        .map(|t| match t.mode {
            ClientTlsMode::Simple => "SIMPLE",
            _ => "MUTUAL",
        })
    };
    for dr in &store.destination_rules {
        let Some(policy) = &dr.spec.traffic_policy else {
            continue;
        };
        let full_name = format!("{}/{}", dr.meta.namespace, dr.meta.name);
        let base = || vec![full_name.clone(), dr.meta.namespace.clone()];
        if let Some(mode) = unverified(policy.tls.as_ref()) {
            let mut args = base();
            args.extend([mode.to_string(), dr.spec.host.clone()]);
            out.push(message(
                &messages::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                dr,
                locations,
                args,
            ));
        }
        for p in &policy.port_level_settings {
            if let Some(mode) = unverified(p.tls.as_ref()) {
                let mut args = base();
                args.extend([
                    mode.to_string(),
                    dr.spec.host.clone(),
                    // Go's text form of the PortSelector, as istioctl prints it.
                    format!("number:{}", p.port.as_ref().map_or(0, |p| p.number)),
                ]);
                out.push(message(
                    &messages::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                    dr,
                    locations,
                    args,
                ));
            }
        }
    }
}

/// IST0152 / IST0153 / IST0154: an EnvoyFilter patch whose operation Envoy's config cannot take
/// where it applies: REPLACE other than on an HTTP or network filter, ADD or REMOVE on a route
/// configuration or an HTTP route.
fn envoy_filter_operations(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for ef in &store.envoy_filters {
        for patch in ef.spec["configPatches"].as_array().into_iter().flatten() {
            let apply_to = patch["applyTo"].as_str().unwrap_or_default();
            let operation = patch["patch"]["operation"].as_str().unwrap_or_default();
            let on_routes = matches!(apply_to, "ROUTE_CONFIGURATION" | "HTTP_ROUTE");
            let kind = match operation {
                "REPLACE" if !matches!(apply_to, "HTTP_FILTER" | "NETWORK_FILTER") => {
                    &messages::ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY
                }
                "ADD" if on_routes => &messages::ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY,
                "REMOVE" if on_routes => &messages::ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY,
                _ => continue,
            };
            out.push(message(kind, ef, locations, Vec::new()));
        }
    }
}

/// IST0101 `selector` and IST0162, as istioctl's gateway analyzer: a Gateway whose selector no
/// pod satisfies, and a server port that no Service of the selected pods exposes (as its port
/// or its target port).
fn gateway_workloads(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for gw in &store.gateways {
        let selector = objects::selector_string(&gw.spec.selector);
        let pods: Vec<(&str, &BTreeMap<String, String>)> = store
            .pod_labels
            .iter()
            .filter(|(_, labels)| labels_match(&gw.spec.selector, labels))
            .map(|(pod, labels)| (pod.as_str(), labels))
            .collect();
        if pods.is_empty() {
            out.push(message(
                &messages::REFERENCED_RESOURCE_NOT_FOUND,
                gw,
                locations,
                vec!["selector".into(), selector],
            ));
            continue;
        }
        let mut target_ports = std::collections::BTreeSet::new();
        let no_ports = BTreeMap::new();
        for (pod, labels) in &pods {
            let ns = pod.split_once('.').map_or("", |(_, ns)| ns);
            let services = store.registry.services.values().filter(|s| {
                s.namespace == ns
                    && s.selector
                        .as_ref()
                        .is_some_and(|sel| !sel.is_empty() && labels_match(sel, labels))
            });
            let container_ports = store.pod_ports.get(*pod).unwrap_or(&no_ports);
            for port in services
                .flat_map(|s| &s.ports)
                .filter(|p| p.protocol != Protocol::Udp)
            {
                // On purpose more lenient than istioctl, which counts target ports only: a
                // server port may also name the Service port, which istiod listens on as its
                // target (the sandbox's 80 → 8080 ingress, Istio's own chart shape).
                target_ports.insert(u32::from(port.port));
                target_ports.extend(port.target_on(container_ports).map(u32::from));
            }
        }
        for server in &gw.spec.servers {
            if let Some(port) = &server.port
                && !target_ports.contains(&port.number)
            {
                out.push(message(
                    &messages::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                    gw,
                    locations,
                    vec![port.number.to_string(), selector.clone()],
                ));
            }
        }
    }
}

/// IST0002, as istioctl's deprecation analyzer: a VirtualService delay's integer `percent`
/// (replaced by `percentage`) and a Sidecar's `outboundTrafficPolicy.egressProxy` (ignored).
fn deprecated_fields(store: &ConfigStore, locations: &Locations, out: &mut Vec<Message>) {
    for vs in &store.virtual_services {
        let delays = vs
            .spec
            .http
            .iter()
            .filter_map(|r| r.fault.as_ref()?.delay.as_ref())
            .filter(|d| d.percent > 0);
        for _ in delays {
            out.push(message(
                &messages::DEPRECATED,
                vs,
                locations,
                vec![
                    "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage"
                        .into(),
                ],
            ));
        }
    }
    for s in &store.sidecars {
        if s.spec
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some())
        {
            out.push(message(
                &messages::DEPRECATED,
                s,
                locations,
                vec!["OutboundTrafficPolicy.EgressProxy ignored".into()],
            ));
        }
    }
}
