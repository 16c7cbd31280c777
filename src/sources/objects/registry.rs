//! Kubernetes Services, EndpointSlices, Endpoints and Pods into the registry: a Service's
//! ports and target ports, its endpoints (from EndpointSlices, else Endpoints, else the Pods it
//! selects), and the checks the API server would make of a Service. Builds no Envoy config.

use super::*;

impl ObjectSet {
    /// Endpoints of one service: from its EndpointSlices when it has any, else from legacy
    /// Endpoints, else from the Pods its selector picks (as the endpoints controller would).
    ///
    /// On purpose, beyond istiod: selected Pods with a loopback IP are always read from the Pod.
    /// The API server refuses loopback addresses in EndpointSlices and Endpoints, yet loopback
    /// pod IPs are how many proxies share one host (INTERCEPTION_MODE NONE, CONTRACT.md).
    pub(super) fn endpoints_of(&self, svc: &KubeService, service: &Service) -> Vec<Endpoint> {
        let ns = &service.namespace;
        let slices: Vec<&EndpointSlice> = self
            .endpoint_slices
            .iter()
            .filter(|s| {
                namespace_of(&s.metadata) == *ns
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        == Some(&service.name)
            })
            .map(|s| &**s)
            .collect();
        let mut out = Vec::new();
        let mut from_endpoint_objects = false;
        if !slices.is_empty() {
            for slice in slices {
                for ep in &slice.endpoints {
                    let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                    for addr in &ep.addresses {
                        let ports =
                            slice.ports.iter().flatten().map(|p| {
                                (p.port.and_then(|n| u16::try_from(n).ok()), p.name.as_ref())
                            });
                        let target = ep.target_ref.as_ref().and_then(|r| r.name.as_deref());
                        self.address_endpoints(&mut out, ns, addr, target, ports, ready);
                    }
                }
            }
            from_endpoint_objects = true;
        }
        let legacy: Vec<&Endpoints> = self
            .endpoints
            .iter()
            .filter(|e| {
                namespace_of(&e.metadata) == *ns
                    && e.metadata.name.as_deref() == Some(&service.name)
            })
            .map(|e| &**e)
            .collect();
        if !from_endpoint_objects && !legacy.is_empty() {
            for eps in legacy {
                for subset in eps.subsets.iter().flatten() {
                    for addr in subset.addresses.iter().flatten() {
                        let ports = subset
                            .ports
                            .iter()
                            .flatten()
                            .map(|p| (u16::try_from(p.port).ok(), p.name.as_ref()));
                        let target = addr.target_ref.as_ref().and_then(|r| r.name.as_deref());
                        self.address_endpoints(&mut out, ns, &addr.ip, target, ports, true);
                    }
                }
            }
            from_endpoint_objects = true;
        }
        let Some(selector) = &service.selector else {
            return out;
        };
        let _ = svc;
        for pod in &self.pods {
            if namespace_of(&pod.metadata) != *ns {
                continue;
            }
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            if !labels_match(selector, &labels) {
                continue;
            }
            let Some(status) = &pod.status else { continue };
            if status.phase.as_deref() != Some("Running") {
                continue;
            }
            let Some(address) = status
                .pod_ip
                .as_deref()
                .and_then(|ip| ip.parse::<IpAddr>().ok())
            else {
                continue;
            };
            if from_endpoint_objects
                && (!address.is_loopback() || out.iter().any(|e| e.address == address))
            {
                continue;
            }
            // Ready as the EndpointSlice controller sees it: the Ready condition (assumed when
            // a file gives none), and not terminating.
            let ready = pod.metadata.deletion_timestamp.is_none()
                && status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "Ready")
                    .is_none_or(|c| c.status == "True");
            for port in &service.ports {
                let Some(number) = resolve_target_port(&port.target_port, pod) else {
                    continue;
                };
                out.push(endpoint(
                    address,
                    number,
                    port.name.clone(),
                    Some(pod),
                    ns,
                    ready,
                ));
            }
        }
        out
    }

    /// The endpoints of one address of an EndpointSlice or Endpoints object: one per port
    /// (`(number, name)`; ports without a valid number are skipped), labelled from the Pod
    /// `target` (else the address) names. An address that is not an IP is skipped.
    pub(super) fn address_endpoints<'p>(
        &self,
        out: &mut Vec<Endpoint>,
        ns: &str,
        address: &str,
        target: Option<&str>,
        ports: impl Iterator<Item = (Option<u16>, Option<&'p String>)>,
        ready: bool,
    ) {
        let Ok(address) = address.parse::<IpAddr>() else {
            return;
        };
        let pod = self.pod_for(ns, target, address);
        for (number, name) in ports {
            if let Some(number) = number {
                let name = name.cloned().unwrap_or_default();
                out.push(endpoint(address, number, name, pod, ns, ready));
            }
        }
    }

    pub(super) fn pod_for(&self, ns: &str, name: Option<&str>, ip: IpAddr) -> Option<&Pod> {
        self.pods
            .iter()
            .find(|p| {
                namespace_of(&p.metadata) == ns
                    && match name {
                        Some(n) => p.metadata.name.as_deref() == Some(n),
                        None => {
                            p.status.as_ref().and_then(|s| s.pod_ip.as_deref())
                                == Some(&ip.to_string())
                        }
                    }
            })
            .map(|p| &**p)
    }
}

/// A WorkloadEntry address as an IP, or as a DNS name to resolve (unspecified IP). Unix
/// sockets and network-only (empty) addresses have no endpoint a sidecar can reach.
pub(super) fn entry_address(address: &str) -> Option<(IpAddr, Option<String>)> {
    if address.is_empty() || address.starts_with("unix://") {
        return None;
    }
    match address.parse::<IpAddr>() {
        Ok(ip) => Some((ip, None)),
        Err(_) => Some((
            IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            Some(address.to_string()),
        )),
    }
}

pub(super) fn endpoint(
    address: IpAddr,
    port: u16,
    service_port_name: String,
    pod: Option<&Pod>,
    ns: &str,
    ready: bool,
) -> Endpoint {
    Endpoint {
        address,
        port,
        service_port_name,
        labels: pod
            .and_then(|p| p.metadata.labels.clone())
            .unwrap_or_default(),
        ready,
        workload: pod.and_then(|p| p.metadata.name.clone()),
        namespace: ns.to_string(),
        hostname: None,
        weight: 1,
    }
}

pub(super) fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_else(|| "default".into())
}

/// A named target port is looked up in the pod's container ports.
pub(super) fn resolve_target_port(target: &TargetPort, pod: &Pod) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Named(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| u16::try_from(p.container_port).ok()),
    }
}

/// What the API server refuses in a Service's ports (and what would give a proxy two clusters
/// of one name): a port or numeric targetPort outside 1-65535, a port number given twice for
/// one protocol, and a port name given twice.
pub(super) fn check_service(svc: &KubeService) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut seen_ports = std::collections::BTreeSet::new();
    let mut seen_names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}]{f}");
        if !(1..=65535).contains(&p.port) {
            problems.push((
                at(".port"),
                format!("{} is not a port: must be 1-65535", p.port),
            ));
        }
        if let Some(IntOrString::Int(t)) = &p.target_port
            && !(1..=65535).contains(t)
        {
            problems.push((
                at(".targetPort"),
                format!("{t} is not a port: must be 1-65535"),
            ));
        }
        let protocol = p.protocol.as_deref().unwrap_or("TCP");
        if !seen_ports.insert((p.port, protocol.to_string())) {
            problems.push((at(""), format!("duplicate port {}/{protocol}", p.port)));
        }
        // (Kubernetes also wants every port named when there are several; an unnamed one is
        // still served here, its protocol sniffed or taken from appProtocol.)
        let name = p.name.as_deref().unwrap_or_default();
        if !name.is_empty() && !seen_names.insert(name) {
            problems.push((at(".name"), format!("duplicate port name {name:?}")));
        }
    }
    problems
}

/// Kubernetes Service → registry Service.
pub fn convert_service(svc: &KubeService) -> Option<Service> {
    let name = svc.metadata.name.clone()?;
    let namespace = namespace_of(&svc.metadata);
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u16::try_from(p.port).ok()?;
            let port_name = p.name.clone().unwrap_or_default();
            let target_port = match &p.target_port {
                None => TargetPort::Number(port),
                Some(IntOrString::Int(n)) => TargetPort::Number(u16::try_from(*n).ok()?),
                Some(IntOrString::String(s)) => match s.parse::<u16>() {
                    Ok(n) => TargetPort::Number(n),
                    Err(_) => TargetPort::Named(s.clone()),
                },
            };
            Some(ServicePort {
                protocol: Protocol::select(
                    port,
                    &port_name,
                    p.app_protocol.as_deref(),
                    p.protocol.as_deref(),
                ),
                name: port_name,
                port,
                target_port,
            })
        })
        .collect();
    let export_to = svc
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EXPORT_TO_ANNOTATION))
        .map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    Some(Service {
        hostname: service_hostname(&name, &namespace),
        cluster_ip: spec.cluster_ip.as_deref().and_then(|ip| ip.parse().ok()),
        selector: spec.selector.filter(|s| !s.is_empty()),
        labels: svc.metadata.labels.clone().unwrap_or_default(),
        name,
        namespace,
        ports,
        export_to,
        resolution: Resolution::ClientSideLb,
        mesh_external: false,
        addresses: Vec::new(),
        source: ServiceSource::Kubernetes,
    })
}
